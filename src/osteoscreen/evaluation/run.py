"""``osteoscreen evaluate``: the full pipeline on every case of a cohort, and the study's tables.

For each case the pipeline runs twice where a reference label map exists: with our own
segmentation (the product) and with the reference segmentation (to separate segmentation
errors from BMD errors). A linear HU-to-BMD rule, fitted on the training cohort's reference
ROIs (``hu_rule.json`` in the models folder), is the baseline that threshold-based tools stand
for. Results: metrics.json, Tables 1-3 (Markdown and CSV), per-case CSV and the figures.

A hospital's cohort is a CSV with ``case_id``, ``image`` (NIfTI file or DICOM folder) and
reference BMD per vertebra (``bmd_L1``, ...) and / or per patient (``patient_bmd``).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CATEGORIES, DEFAULT_CONFIG
from ..training.data import CohortRow, read_cohort, row_kvp
from .floor import REFERENCES, calibration_floor
from .metrics import (
    aggregate_dice,
    body_matches,
    classification_metrics,
    dice_per_label,
    level_agreement,
    regression_metrics,
    to_jsonable,
)

__all__ = ["HuRule", "evaluate_cohort", "fit_hu_rule"]

log = logging.getLogger(__name__)

DICE_LEVELS = ("T12", "L1", "L2", "L3", "L4")


@dataclass
class HuRule:
    """BMD = slope * HU + intercept: the linear rule of threshold-based tools."""

    slope: float
    intercept: float
    n: int

    def __call__(self, hu: float) -> float:
        return self.slope * hu + self.intercept

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept, "n": self.n}


def fit_hu_rule(hu: list[float], bmd: list[float]) -> HuRule:
    if len(hu) < 3:
        raise ValueError(f"fitting the HU rule needs at least 3 vertebrae, got {len(hu)}")
    slope, intercept = np.polyfit(np.asarray(hu), np.asarray(bmd), 1)
    return HuRule(float(slope), float(intercept), len(hu))


@functools.lru_cache(maxsize=2)
def _models(models_dir: Path) -> Any:
    """The models, loaded once per worker process (not once per case)."""
    from ..models import load_models

    return load_models(models_dir)


def _init_worker(threads: int) -> None:
    """Each worker process gets its share of the cores: torch's default (all of them) in every
    worker oversubscribes the CPU, and the threads then spin in the kernel instead of working."""
    import torch

    torch.set_num_threads(threads)


def _run_one(args: tuple[CohortRow, Path, Path, Path | None, bool, Path | None, str]) -> dict[str, Any]:
    """Screen one case (own segmentation and, where given, the reference one)."""
    row, models_dir, out, reuse, reports, cache_dir, fingerprint = args
    from ..errors import OsteoscreenError
    from ..io.volume import read_nifti
    from ..pipeline import screen
    from ..segmentation.cache import ClassCache

    models = _models(models_dir)
    cache = ClassCache(cache_dir, fingerprint) if cache_dir is not None else None
    rec: dict[str, Any] = {"case_id": row.case_id, "truth": row.bmd, "raw": row.raw}
    for mode in ("own", "reference"):
        if mode == "reference" and row.label is None:
            continue
        cdir = out / "cases" / row.case_id / mode
        seg = row.label if mode == "reference" else None
        if mode == "own" and reuse is not None:
            earlier = reuse / "cases" / row.case_id / "own" / "vertebrae_seg.nii.gz"
            seg = earlier if earlier.is_file() else None
        try:
            res = screen(
                row.image,
                cdir,
                models=models,
                segmentation=seg,
                kvp=row_kvp(row),
                reports=reports,
                class_cache=cache,
                case_id=row.case_id,
            )
        except OsteoscreenError as exc:
            rec[mode] = {"status": "failed", "reason": str(exc)}
            continue
        rec[mode] = json.loads((cdir / "summary.json").read_text())
        if mode == "own" and row.label is not None and row.label.exists():
            pred = read_nifti(cdir / "vertebrae_seg.nii.gz", dtype=np.int16).array
            ref = read_nifti(row.label, dtype=np.int16).array
            rec.update(segmentation_scores(pred, ref))
        del res
    own, ref = rec.get("own", {}), rec.get("reference", {})
    if own.get("status") == "screened" and ref.get("status") == "screened":
        rec["hu_error"] = hu_errors(own, ref, rec.get("matches"))
        rec["level_confidence"] = own["input"].get("level_confidence")
    return rec


def segmentation_scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Dice by level (T12-L4), level agreement, body pairing and Dice by overlap of one case."""
    from ..labels import name_to_id

    ids = [name_to_id(n) for n in DICE_LEVELS]
    pairs = body_matches(pred, ref)
    # Outline quality whatever the level: each reference body against the body of ours that
    # overlaps it most (ours may carry another id, or V1, V2, ...).
    ours: dict[int, tuple[int, int]] = {}
    for a, b in pairs.items():
        overlap = int(((pred == a) & (ref == b)).sum())
        if b not in ours or overlap > ours[b][1]:
            ours[b] = (a, overlap)
    return {
        "dice": {str(k): v for k, v in dice_per_label(pred, ref, ids).items()},
        "levels": level_agreement(pred, ref),
        "matches": {_level_name(a): _level_name(b) for a, b in pairs.items()},
        "dice_matched": {
            n: _dice(pred == ours[name_to_id(n)][0], ref == name_to_id(n)) if name_to_id(n) in ours else 0.0
            for n in DICE_LEVELS
            if (ref == name_to_id(n)).any()
        },
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def hu_errors(
    own: dict[str, Any], ref: dict[str, Any], matches: dict[str, str] | None = None
) -> dict[str, float]:
    """Trabecular mean HU of our own bodies minus that of the reference bodies, per reference level.

    Both are measured by the same ROI code, so the difference is what the segmentation's
    outline costs. Our bodies are paired with the reference body they overlap most
    (``matches``: our label -> reference label), so a body at a wrong or unknown level is
    still compared with itself, not with its neighbour; without ``matches``, by label.
    """
    theirs = {v["label"]: v["trabecular_hu_mean"] for v in ref["vertebrae"]}
    out: dict[str, float] = {}
    for v in own["vertebrae"]:
        target = matches.get(v["label"]) if matches is not None else v["label"]
        if target is not None and target in theirs:
            out[target] = float(v["trabecular_hu_mean"] - theirs[target])
    return out


def _patient_truth(row_raw: dict[str, str], truth: dict[str, float], levels: list[str]) -> float | None:
    v = (row_raw.get("patient_bmd") or "").strip()
    if v:
        return float(v)
    vals = [truth[n] for n in levels if n in truth]
    return float(np.mean(vals)) if vals else None


def _collect(records: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Per-vertebra and per-patient pairs of truth and prediction for one mode."""
    vt, vp, vprob, vhu = [], [], [], []
    pt, pp, pprob, phu = [], [], [], []
    for rec in records:
        s = rec.get(mode)
        if not s or s.get("status") != "screened":
            continue
        truth = rec["truth"]
        for v in s["vertebrae"]:
            if v["excluded"] or v["label"] not in truth or v["bmd_mg_cm3"] is None:
                continue
            vt.append(truth[v["label"]])
            vp.append(v["bmd_mg_cm3"])
            vprob.append([v["probabilities"].get(c, 0.0) for c in CATEGORIES])
            vhu.append(v["trabecular_hu_mean"])
        patient = s["patient"]
        ref = _patient_truth(rec["raw"], truth, patient["levels_used"])
        if patient["bmd_mg_cm3"] is None or ref is None:
            continue
        used = [v for v in s["vertebrae"] if v["label"] in patient["levels_used"]]
        pt.append(ref)
        pp.append(patient["bmd_mg_cm3"])
        if patient.get("probabilities"):
            pprob.append([patient["probabilities"].get(c, 0.0) for c in CATEGORIES])
        else:  # an older summary.json, without the patient probabilities
            pprob.append(
                np.mean([[v["probabilities"].get(c, 0.0) for c in CATEGORIES] for v in used], axis=0).tolist()
            )
        phu.append(float(np.mean([v["trabecular_hu_mean"] for v in used])))
    return {"vt": vt, "vp": vp, "vprob": vprob, "vhu": vhu, "pt": pt, "pp": pp, "pprob": pprob, "phu": phu}


def _metrics(pairs: dict[str, Any], rule: HuRule | None, n_boot: int) -> dict[str, Any]:
    th = DEFAULT_CONFIG.thresholds
    out: dict[str, Any] = {"n_patients": len(pairs["pt"]), "n_vertebrae": len(pairs["vt"])}
    if len(pairs["pt"]) >= 3:
        y = np.array([th.class_index(b) for b in pairs["pt"]])
        out["classification"] = classification_metrics(y, np.array(pairs["pprob"]), n_boot=n_boot)
        out["regression"] = regression_metrics(pairs["pt"], pairs["pp"])
        if rule is not None:
            hu_pred = [rule(h) for h in pairs["phu"]]
            out["hu_rule"] = {"regression": regression_metrics(pairs["pt"], hu_pred)}
    if len(pairs["vt"]) >= 3:
        yv = np.array([th.class_index(b) for b in pairs["vt"]])
        out["per_vertebra"] = {
            "classification": classification_metrics(yv, np.array(pairs["vprob"]), n_boot=n_boot),
            "regression": regression_metrics(pairs["vt"], pairs["vp"]),
        }
        if rule is not None:
            out["per_vertebra"]["hu_rule"] = {
                "regression": regression_metrics(pairs["vt"], [rule(h) for h in pairs["vhu"]])
            }
    return out


def evaluate_cohort(
    cohort: Path,
    models_dir: Path,
    out: Path,
    *,
    name: str | None = None,
    workers: int = 1,
    n_boot: int = 1000,
    max_cases: int | None = None,
    progress: bool = True,
    reuse_segmentation: Path | None = None,
    reports: bool = True,
    class_cache: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the pipeline on a cohort; writes the outputs into ``out`` and returns metrics.

    ``reuse_segmentation`` is the ``out`` of an earlier evaluation of the same cohort: its own
    segmentations stand in for running the segmenter again (a case it has none for is
    segmented), so a change of the BMD models or the patient rule is re-scored without the
    segmenter (about a third of a case's time).
    Only valid while the segmenter and the level rules are those that made them.
    ``reports=False`` writes no per-case key image, DICOM SEG or SR (the metrics are the same).
    ``class_cache`` is a folder for this cohort's VB-Net class maps (``segmentation.cache``):
    read where present, written where not, so a post-processing change is re-measured without
    the networks.

    Raises:
        InputError: ``class_cache`` holds class maps of other VB-Net weights.
    """
    from tqdm import tqdm

    from . import figures, tables

    rows = read_cohort(cohort)
    if max_cases:
        rows = rows[:max_cases]
    if not rows:
        raise ValueError(f"cohort {cohort} has no cases")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rule_path = Path(models_dir) / "hu_rule.json"
    rule = None
    if rule_path.exists():
        d = json.loads(rule_path.read_text())
        rule = HuRule(d["slope"], d["intercept"], d.get("n", 0))
    if reuse_segmentation is not None and not (Path(reuse_segmentation) / "cases").is_dir():
        raise ValueError(f"{reuse_segmentation} is not the output folder of an earlier evaluation")
    reuse = None if reuse_segmentation is None else Path(reuse_segmentation)
    if reuse is not None and reuse.resolve() == out.resolve():
        raise ValueError("the evaluation whose segmentations are reused must be in another folder than --out")
    fingerprint = ""
    if class_cache is not None:
        from ..segmentation.cache import ClassCache, segmenter_fingerprint

        fingerprint = segmenter_fingerprint(Path(models_dir))
        ClassCache(Path(class_cache), fingerprint)  # refuses another segmenter's folder up front
    cache_dir = None if class_cache is None else Path(class_cache)
    jobs = [(r, Path(models_dir), out, reuse, reports, cache_dir, fingerprint) for r in rows]
    records: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(jobs), desc=f"evaluate {name or cohort.parent.name}", unit="case", disable=not progress
    )
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool:
            for rec in pool.map(_run_one, jobs):
                records.append(rec)
                bar.update()
    else:
        for job in jobs:
            records.append(_run_one(job))
            bar.update()
    bar.close()
    set_name = name or cohort.parent.name
    own = _metrics(_collect(records, "own"), rule, n_boot)
    ref = (
        _metrics(_collect(records, "reference"), rule, n_boot)
        if any("reference" in r for r in records)
        else None
    )
    failed = [
        {"case_id": r["case_id"], "reason": r["own"].get("reason")}
        for r in records
        if r.get("own", {}).get("status") != "screened"
    ]
    metrics: dict[str, Any] = {
        "set": set_name,
        "n_cases": len(rows),
        "n_screened": len(rows) - len(failed),
        "segmentation_reused_from": None if reuse is None else str(reuse),
        "case_reports_written": reports,
        "class_cache": None if cache_dir is None else str(cache_dir),
        "not_screened": failed,
        **own,
        "segmentation": dice_summary(records),
        "baselines": {},
    }
    lv = [r["levels"] for r in records if "levels" in r]
    if lv:
        tot = {k: int(sum(d[k] for d in lv)) for k in lv[0]}
        metrics["segmentation"]["levels"] = {
            **tot,
            "accuracy": tot["correct"] / max(1, tot["correct"] + tot["wrong_level"]),
            "cases_all_correct": sum(d["correct"] == d["n_pred"] and d["missed"] == 0 for d in lv) / len(lv),
        }
    errs = [r["hu_error"] for r in records if "hu_error" in r]
    if errs:
        levels = sorted({k for e in errs for k in e}, key=_level_order)
        metrics["segmentation"]["hu_error"] = {
            lv: {
                "mean": float(np.mean([e[lv] for e in errs if lv in e])),
                "mean_abs": float(np.mean([abs(e[lv]) for e in errs if lv in e])),
                "n": sum(lv in e for e in errs),
            }
            for lv in levels
        }
    metrics["segmentation"]["per_case"] = [
        {
            "case_id": r["case_id"],
            "dice": {_level_name(int(k)): v for k, v in r.get("dice", {}).items()},
            "dice_matched": r.get("dice_matched"),
            "levels": r.get("levels"),
            "level_confidence": r.get("level_confidence"),
            "hu_error": r.get("hu_error"),
        }
        for r in records
        if "dice" in r
    ]
    if rule is not None and "hu_rule" in own:
        metrics["baselines"]["hu_rule"] = {**own["hu_rule"], "rule": rule.to_dict()}
    if ref is not None:
        metrics["baselines"]["reference_segmentation"] = ref
    # A generated cohort: how far a perfect CT-number reader gets without seeing the scanner.
    params = Path(cohort).parent / "synth_params.json"
    floor = calibration_floor([r.raw for r in rows], params)
    # ... and one that calibrates with the fat and muscle references, as the networks do.
    floor_refs = calibration_floor([r.raw for r in rows], params, references=REFERENCES)
    if floor is not None:
        metrics["baselines"]["calibration_floor"] = floor
    if floor_refs is not None:
        metrics["baselines"]["calibration_floor_references"] = floor_refs
    metrics = to_jsonable(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    md: list[str] = []
    # Tables and figures (patient level, the study's unit).
    if "classification" in own:
        t1 = {set_name: own["classification"]}
        t3 = {set_name: own["regression"]}
        if rule is not None:
            t3[f"{set_name} (HU rule)"] = own["hu_rule"]["regression"]
        if ref is not None and "regression" in ref:
            t1[f"{set_name} (reference segmentation)"] = ref["classification"]
            t3[f"{set_name} (reference segmentation)"] = ref["regression"]
        md += [
            f"# Evaluation: {set_name} (n = {own['n_patients']} patients, {own['n_vertebrae']} vertebrae)",
            "",
            "## Table 1: classification",
            tables.table1_markdown(t1),
            "",
            "## Table 2: confusion matrix (rows: reference, columns: predicted)",
            tables.table2_markdown(own["classification"]["confusion_matrix"]),
            "",
            "## Table 3: regression (mg/cm3)",
            tables.table3_markdown(t3, bland_altman=True),
        ]
        if floor is not None:
            md += [
                "",
                f"Calibration floor of this cohort ({floor['n']} patients): a reader that measures every "
                "trabecular CT number exactly but assumes the reference scanner's bone slope, HU gain "
                f"and offset, energy and beam hardening has MAE {floor['mae']:.2f}, RMSE "
                f"{floor['rmse']:.2f}, bias {floor['bias']:+.2f} mg/cm3 "
                "(`osteoscreen.evaluation.floor`).",
            ]
        if floor_refs is not None:
            md += [
                "",
                "The same reader estimating the HU gain and offset from the fat and muscle it "
                "measures, trusting them as the networks are trained to, has MAE "
                f"{floor_refs['mae']:.2f}, RMSE {floor_refs['rmse']:.2f}, "
                f"bias {floor_refs['bias']:+.2f} mg/cm3.",
            ]
        tables.table1_csv(t1, out / "table1.csv")
        tables.table3_csv(t3, out / "table3.csv", bland_altman=True)
        pairs = _collect(records, "own")
        y = np.array([DEFAULT_CONFIG.thresholds.class_index(b) for b in pairs["pt"]])
        from .metrics import roc_curves

        figures.plot_roc(
            roc_curves(y, np.array(pairs["pprob"])),
            own["classification"],
            out / "roc.png",
            f"ROC, {set_name}",
        )
        figures.plot_correlation(
            pairs["pt"], pairs["pp"], out / "correlation.png", f"DenseNet BMD vs reference, {set_name}"
        )
        figures.plot_bland_altman(
            pairs["pt"], pairs["pp"], out / "bland_altman.png", f"Bland-Altman, {set_name}"
        )
        figures.plot_confusion(
            own["classification"]["confusion_matrix"], out / "confusion.png", f"Confusion, {set_name}"
        )
    if not md:
        md = [f"# Evaluation: {set_name} ({metrics['n_screened']} of {metrics['n_cases']} cases screened)"]
    md += segmentation_markdown(metrics["segmentation"])
    (out / "tables.md").write_text("\n".join(md) + "\n")
    _write_cases_csv(records, out / "cases.csv")
    return metrics


def dice_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Dice per level over the evaluated cases, by level and by overlap.

    By level (``dice_per_level``): our body of a level against the reference body of that
    level, so a body named one level off scores 0 at both levels. By overlap
    (``dice_matched_per_level``): each reference body against the body of ours that overlaps
    it most, whatever its name, i.e. the outline alone. Empty where no case had reference labels.
    """
    from ..labels import name_to_id

    dices = [{int(k): v for k, v in r["dice"].items()} for r in records if "dice" in r]
    if not dices:
        return {}
    agg = aggregate_dice(dices)
    out: dict[str, Any] = {
        "dice_mean": agg.get("all", {}).get("mean"),
        "dice_per_level": {k: v.get("mean") for k, v in agg.items() if k != "all"},
        "dice_detail": agg,
    }
    matched = [
        {name_to_id(n): v for n, v in r["dice_matched"].items()} for r in records if r.get("dice_matched")
    ]
    if matched:
        agg_m = aggregate_dice(matched)
        out["dice_matched_per_level"] = {k: v.get("mean") for k, v in agg_m.items() if k != "all"}
        out["dice_matched_detail"] = agg_m
    return out


def _level_order(name: str) -> int:
    from ..labels import name_to_id

    try:
        return name_to_id(name)
    except (KeyError, ValueError):
        return 1000


def _level_name(vid: int) -> str:
    from ..labels import id_to_name

    return id_to_name(vid)


def segmentation_markdown(seg: dict[str, Any]) -> list[str]:
    """The segmentation part of tables.md: Dice, levels, HU error, and per case where few."""
    md: list[str] = []
    if seg.get("dice_per_level"):
        by_overlap = seg.get("dice_matched_detail") or {}
        md += [
            "",
            "## Segmentation Dice per level",
            "By level: our body of that level against the reference body of that level (a body "
            "named one level off scores 0). By overlap: each reference body against our body "
            "that overlaps it most, whatever its name (the outline alone).",
            "",
            "| level | mean Dice by level | mean Dice by overlap | median by overlap |",
            "|---|---|---|---|",
        ]
        for k, v in seg["dice_per_level"].items():
            if v is None:
                continue
            o = by_overlap.get(k, {})
            mo = "-" if o.get("mean") is None else f"{o['mean']:.3f}"
            me = "-" if o.get("median") is None else f"{o['median']:.3f}"
            md.append(f"| {k} | {v:.3f} | {mo} | {me} |")
    if seg.get("levels"):
        lv = seg["levels"]
        md += [
            "",
            "## Level labelling (own segmentation against the reference bodies)",
            f"{lv['correct']} of {lv['correct'] + lv['wrong_level']} matched bodies have the right "
            f"level ({lv['accuracy']:.3f}); {lv['spurious']} spurious, {lv['missed']} of "
            f"{lv['n_ref']} reference bodies missed; every level right in "
            f"{lv['cases_all_correct']:.1%} of cases.",
        ]
    if seg.get("hu_error"):
        md += [
            "",
            "## Trabecular HU, own segmentation minus reference segmentation (same ROI code)",
            "| level | mean error (HU) | mean abs error (HU) | n |",
            "|---|---|---|---|",
        ]
        md += [
            f"| {k} | {v['mean']:+.1f} | {v['mean_abs']:.1f} | {v['n']} |" for k, v in seg["hu_error"].items()
        ]
    cases = seg.get("per_case") or []
    if 0 < len(cases) <= 30:
        md += ["", "## Per case", case_table_header()]
        md += [case_table_row(c) for c in cases]
    return md


def case_table_header() -> str:
    return (
        "| case | Dice T12 / L1 / L2 / L3 / L4 | Dice by overlap (any level) | levels right | spurious "
        "| missed | level confidence | HU error L1 / L2 / L3 |\n|---|---|---|---|---|---|---|---|"
    )


def case_table_row(c: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    dice = " / ".join(f(c["dice"].get(n), ".3f") for n in DICE_LEVELS)
    matched = " / ".join(f((c.get("dice_matched") or {}).get(n), ".3f") for n in DICE_LEVELS)
    lv = c.get("levels") or {}
    err = c.get("hu_error") or {}
    hu = " / ".join(f(err.get(n), "+.1f") for n in ("L1", "L2", "L3"))
    conf = c.get("level_confidence")
    return (
        f"| {c['case_id']} | {dice} | {matched} | {lv.get('correct', 0)} of {lv.get('n_pred', 0)} | "
        f"{lv.get('spurious', 0)} | {lv.get('missed', 0)} of {lv.get('n_ref', 0)} | {f(conf, '.2f')} | {hu} |"
    )


def _write_cases_csv(records: list[dict[str, Any]], path: Path) -> None:
    fields = [
        "case_id",
        "mode",
        "status",
        "level",
        "truth_bmd",
        "bmd",
        "category",
        "hu_mean",
        "excluded",
        "flags",
    ]
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".csv")
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        for rec in records:
            for mode in ("own", "reference"):
                s = rec.get(mode)
                if s is None:
                    continue
                if s.get("status") != "screened":
                    w.writerow(
                        [rec["case_id"], mode, s.get("status"), "", "", "", "", "", "", s.get("reason", "")]
                    )
                    continue
                for v in s["vertebrae"]:
                    w.writerow(
                        [
                            rec["case_id"],
                            mode,
                            "screened",
                            v["label"],
                            rec["truth"].get(v["label"], ""),
                            v["bmd_mg_cm3"],
                            v["category"],
                            v["trabecular_hu_mean"],
                            v["excluded"],
                            " ".join(v["flags"]),
                        ]
                    )
    os.replace(tmp, path)
