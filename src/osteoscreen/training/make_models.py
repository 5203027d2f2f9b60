"""``python -m osteoscreen.training.make_models``: regenerate the training cohort and retrain
every shipped model from scratch into ``models/`` (what ``make models`` runs).

Each bundle's metadata records the cohort (seed, size, profile), the iterations, the best
checkpoint's validation metrics and the code version.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from ..evaluation.run import HuRule, fit_hu_rule
from ..synth.cohort import GENERATOR_VERSION, write_cohort
from .data import prepare_vertebra_samples, read_cohort
from .densenet import DEFAULT_CROP, train_densenet
from .ensemble import build_ensemble
from .segmenter import train_segmenter

log = logging.getLogger(__name__)

SHIPPED = ("vbnet_coarse", "vbnet_fine", "densenet_classifier", "densenet_regressor")


def _install(src: Path, dst: Path) -> None:
    """Copy a trained bundle's configs and TorchScript model (not checkpoints or caches)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "configs").mkdir(parents=True)
    (tmp / "models").mkdir()
    for f in ("metadata.json", "inference.json"):
        shutil.copy2(src / "configs" / f, tmp / "configs" / f)
    shutil.copy2(src / "models" / "model.ts", tmp / "models" / "model.ts")
    if (src / "history.json").exists():
        shutil.copy2(src / "history.json", tmp / "history.json")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def fit_hu_rule_on_cohort(cohort: Path, cache: Path) -> HuRule:
    """The baseline: BMD = a * HU + b over the reference trabecular ROIs of a cohort."""
    hu, bmd = [], []
    for row in read_cohort(cohort):
        for s in prepare_vertebra_samples(row, DEFAULT_CROP, cache):
            hu.append(s.roi_hu_mean)
            bmd.append(s.bmd)
    return fit_hu_rule(hu, bmd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("build/models"), help="cohort, caches and checkpoints")
    p.add_argument("--models", type=Path, default=Path("models"), help="where the shipped bundles go")
    p.add_argument("--n", type=int, default=150, help="training cohort size")
    p.add_argument("--seed", type=int, default=1, help="training cohort seed")
    p.add_argument("--seg-iterations", type=int, nargs=2, default=(800, 3000), metavar=("COARSE", "FINE"))
    p.add_argument("--reg-iterations", type=int, default=1500)
    p.add_argument("--cls-iterations", type=int, default=600)
    p.add_argument(
        "--reg-members",
        type=int,
        default=1,
        help="regressor networks trained from seeds 0, 1, ... on one validation split, installed as "
        "their mean (default 1: a single network; a mean of 2 measured worse on 200 test patients)",
    )
    p.add_argument("--fresh", action="store_true", help="drop checkpoints first (caches kept)")
    p.add_argument(
        "--stages",
        nargs="+",
        choices=("segmenter", "real", "densenet"),
        default=["segmenter", "real", "densenet"],
        help="which models to retrain (the others in --models are kept); real: fine-tune the fine "
        "VB-Net on the VerSe real CTs (--verse) plus the synthetic cohort",
    )
    p.add_argument(
        "--verse",
        type=Path,
        default=Path("../shared/data/ct/verse/ct_and_labels"),
        help="real CTs with whole-vertebra labels for the 'real' stage (skipped where absent)",
    )
    p.add_argument("--real-iterations", type=int, default=2000)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    cohort_dir = a.work / "cohort"
    cohort = cohort_dir / "cohort.csv"
    params = cohort_dir / "synth_params.json"
    fresh_cohort = True
    if cohort.exists() and params.exists():
        p_ = json.loads(params.read_text())
        fresh_cohort = not (
            p_.get("n") == a.n
            and p_.get("seed") == a.seed
            and p_.get("profile") == "train"
            and p_.get("generator_version") == GENERATOR_VERSION
        )
    if fresh_cohort:
        shutil.rmtree(cohort_dir, ignore_errors=True)
        write_cohort(cohort_dir, a.n, a.seed, "train", dicom_share=0.0)
    timings = {"synth_s": round(time.perf_counter() - t0, 1)}
    runs = a.work / "runs"
    trained = [
        n
        for n in SHIPPED
        if (n.startswith("vbnet") and "segmenter" in a.stages)
        or (n.startswith("densenet") and "densenet" in a.stages)
    ]
    if fresh_cohort:
        # A new cohort invalidates the sample caches derived from the old one.
        shutil.rmtree(runs / "cache", ignore_errors=True)
    if a.fresh or fresh_cohort:
        # From scratch: drop checkpoints; the sample cache is derived from the cohort and kept.
        for name in trained:
            shutil.rmtree(runs / name, ignore_errors=True)
    if "segmenter" in a.stages:
        for stage, its in zip(("coarse", "fine"), a.seg_iterations):
            t = time.perf_counter()
            train_segmenter(cohort, runs, stage=stage, iterations=its, seed=0)
            timings[f"vbnet_{stage}_s"] = round(time.perf_counter() - t, 1)
    if "real" in a.stages:
        from .real import finetune_on_real, verse_pairs

        if verse_pairs(a.verse):
            t = time.perf_counter()
            # Starts from the fine VB-Net just trained, or else the one in --models.
            init = runs if "segmenter" in a.stages else a.models
            shutil.rmtree(a.work / "runs_real" / "vbnet_fine", ignore_errors=True)
            finetune_on_real(cohort, a.verse, a.work / "runs_real", init, iterations=a.real_iterations)
            timings["vbnet_fine_real_s"] = round(time.perf_counter() - t, 1)
            trained = [n for n in trained if n != "vbnet_fine"]
            _install(a.work / "runs_real" / "vbnet_fine", a.models / "vbnet_fine")
        else:
            log.warning("no VerSe cases in %s: the 'real' fine-tuning stage is skipped", a.verse)
    if "densenet" in a.stages:
        t = time.perf_counter()
        train_densenet("regressor", cohort, runs, iterations=a.reg_iterations, seed=0)
        if a.reg_members > 1:
            # Members 1, 2, ... train in folders of their own on the validation split of seed 0,
            # reading the crops that member 0 prepared (they do not depend on the seed).
            members = [runs / "densenet_regressor"]
            for seed in range(1, a.reg_members):
                member_runs = a.work / f"runs_seed{seed}"
                if a.fresh or fresh_cohort:
                    shutil.rmtree(member_runs / "densenet_regressor", ignore_errors=True)
                member_runs.mkdir(parents=True, exist_ok=True)
                if not (member_runs / "cache").exists():
                    (member_runs / "cache").symlink_to((runs / "cache").resolve(), target_is_directory=True)
                train_densenet(
                    "regressor", cohort, member_runs, iterations=a.reg_iterations, seed=seed, split_seed=0
                )
                members.append(member_runs / "densenet_regressor")
            build_ensemble(members, runs / "densenet_regressor_ensemble", cohort=cohort, cache=runs / "cache")
        timings["densenet_regressor_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        train_densenet("classifier", cohort, runs, iterations=a.cls_iterations, seed=0)
        timings["densenet_classifier_s"] = round(time.perf_counter() - t, 1)
    a.models.mkdir(parents=True, exist_ok=True)
    for name in trained:
        src = runs / name
        if name == "densenet_regressor" and a.reg_members > 1:
            src = runs / "densenet_regressor_ensemble"
        _install(src, a.models / name)
    if "densenet" in a.stages:
        # The rule is fitted on the DenseNets' crops: a segmenter-only run leaves it as it was.
        rule = fit_hu_rule_on_cohort(cohort, runs / "cache")
        rule_cohort = {"n": a.n, "seed": a.seed, "generator_version": GENERATOR_VERSION}
        rule_json = json.dumps({**rule.to_dict(), "cohort": rule_cohort}, indent=2)
        (a.models / "hu_rule.json").write_text(rule_json)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    cohort_info = {"n": a.n, "seed": a.seed, "generator_version": GENERATOR_VERSION}
    (a.models / f"TRAINING_{'_'.join(a.stages)}.json").write_text(
        json.dumps({"cohort": cohort_info, "stages": a.stages, "timings": timings}, indent=2)
    )
    print(json.dumps(timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
