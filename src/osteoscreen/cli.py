"""The ``osteoscreen`` command: run, synth, example, train, evaluate, robustness.

Exit codes of ``run``: 0 screened, 3 not screenable (summary.json says why), 2 bad arguments,
1 internal error. Every failure is one line on stderr, never a traceback (``--verbose`` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .results import ScreeningResult

EXIT_OK, EXIT_INTERNAL, EXIT_ARGS, EXIT_NOT_SCREENABLE = 0, 1, 2, 3

log = logging.getLogger("osteoscreen")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"osteoscreen: error: {message}\n")
        raise SystemExit(EXIT_ARGS)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="osteoscreen", description="Opportunistic osteoporosis screening from routine CT.")
    p.add_argument("--version", action="version", version=f"osteoscreen {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="screen one CT study (DICOM folder or NIfTI)")
    r.add_argument(
        "--input", "-i", required=True, type=Path, help="DICOM folder (any nesting) or .nii/.nii.gz in HU"
    )
    r.add_argument("--output", "-o", required=True, type=Path, help="output folder (created)")
    r.add_argument(
        "--models",
        "-m",
        type=Path,
        default=None,
        help="models folder (default: OSTEOSCREEN_MODELS or ./models)",
    )
    r.add_argument(
        "--segmentation",
        type=Path,
        default=None,
        help="vertebral-body label map (VerSe ids) to use instead of the VB-Net",
    )
    r.add_argument(
        "--kvp",
        type=_kvp,
        default=None,
        help="tube voltage of a NIfTI input (DICOM inputs use their header's KVP; default 120)",
    )
    r.add_argument(
        "--no-muscle-reference",
        action="store_true",
        help="do not give the BMD models the paraspinal muscle reference (for example where "
        "fatty muscle is common); the fat reference and kVp are still used",
    )
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    r.add_argument("--quiet", "-q", action="store_true", help="no table on stdout")

    s = sub.add_parser("synth", help="generate a synthetic cohort with known BMD")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--n", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--profile", choices=("train", "test", "independent"), default="train")
    s.add_argument(
        "--dicom-share", type=float, default=0.2, help="share of cases also written as DICOM series"
    )
    s.add_argument("--workers", type=int, default=None)
    s.add_argument(
        "--generator-version",
        type=int,
        default=None,
        help="make the images of an earlier generator version (2: the cohort the shipped models "
        "were trained on); default: the current one",
    )

    e = sub.add_parser("example", help="write one synthetic CT study as a DICOM series (the demo study)")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--seed", type=int, default=2024)
    e.add_argument(
        "--slices", type=int, default=None, help="number of slices (default: what the protocol covers)"
    )
    e.add_argument("--matrix", type=int, default=None, help="in-plane matrix (e.g. 512)")
    e.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("INPLANE", "SLICE"), help="mm")
    e.add_argument("--nifti", action="store_true", help="also write ct.nii.gz and the reference labels")

    t = sub.add_parser("train", help="train the segmenter, classifier or regressor")
    t.add_argument("model", choices=("segmenter", "classifier", "regressor"))
    t.add_argument("--cohort", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--iterations", type=int, default=None)
    t.add_argument("--stage", choices=("coarse", "fine", "both"), default="both", help="segmenter stage(s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="DenseNets: seed of the validation split (default: --seed); ensemble members share one",
    )
    t.add_argument("--no-resume", action="store_true", help="start from scratch even if checkpoints exist")
    t.add_argument(
        "--time-limit", type=float, default=None, help="stop after this many seconds (best checkpoint kept)"
    )
    t.add_argument("--max-cases", type=int, default=None)
    t.add_argument(
        "--init-member",
        type=int,
        default=0,
        help="DenseNets: with --init-from an ensemble bundle, the member to start from",
    )
    t.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="fine-tune from this models folder's bundle of the same name instead of random weights",
    )
    t.add_argument(
        "--core",
        type=int,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="DenseNets: half-widths (crop voxels) of the trabecular core the calibrated head reads "
        "(default: 5 5 3, or the --init-from bundle's)",
    )

    v = sub.add_parser(
        "evaluate", help="run the pipeline on a cohort and write the study's tables and figures"
    )
    v.add_argument("--cohort", required=True, type=Path, help="cohort.csv (synthetic or a hospital's)")
    v.add_argument(
        "--models", type=Path, default=None, help="models folder (default: OSTEOSCREEN_MODELS or ./models)"
    )
    v.add_argument("--out", required=True, type=Path)
    v.add_argument(
        "--name", default=None, help="name of the set in the tables (default: the cohort folder's name)"
    )
    v.add_argument("--workers", type=int, default=1)
    v.add_argument(
        "--n-boot", type=int, default=1000, help="bootstrap resamples for the AUC confidence intervals"
    )
    v.add_argument("--max-cases", type=int, default=None)
    v.add_argument(
        "--segmentation-from",
        type=Path,
        default=None,
        help="the --out of an earlier evaluation of this cohort: reuse its own segmentations "
        "(same segmenter) to re-score BMD models or the patient rule without segmenting again",
    )
    v.add_argument(
        "--no-reports",
        action="store_true",
        help="write no per-case key image, DICOM SEG or SR (faster; the metrics are the same)",
    )
    v.add_argument(
        "--class-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder (one per cohort) for the VB-Nets' class maps: read where present, written "
        "where not, so a change of the post-processing is re-measured without the networks",
    )

    n = sub.add_parser(
        "ensemble",
        help="combine DenseNet bundles trained from other seeds into one bundle (their mean)",
    )
    n.add_argument("--members", required=True, type=Path, nargs="+", help="bundle folders, two or more")
    n.add_argument("--out", required=True, type=Path, help="the ensemble's bundle folder (replaced)")
    n.add_argument(
        "--cohort",
        type=Path,
        default=None,
        help="training cohort: measure members and ensemble on its validation split",
    )
    n.add_argument(
        "--split-seed", type=int, default=0, help="the members' validation split (their --split-seed)"
    )
    n.add_argument(
        "--cache", type=Path, default=None, help="vertebra crop cache (default: beside the first member)"
    )

    f = sub.add_parser(
        "floor",
        help="the calibration floor: the MAE of a perfect CT-number reader that cannot see the "
        "scanner's calibration, on a synthetic profile or a generated cohort",
    )
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--profile", choices=("train", "test", "independent"))
    src.add_argument("--cohort", type=Path, help="cohort.csv written by `osteoscreen synth`")
    f.add_argument("--n", type=int, default=2000, help="scans drawn from --profile (no images are made)")

    b = sub.add_parser(
        "robustness",
        help="one real CT with reference bodies, reoriented, cropped, resampled, noised and "
        "made osteoporotic; Dice, levels and HU error for each",
    )
    b.add_argument("--image", required=True, type=Path, help="CT (NIfTI, HU)")
    b.add_argument("--labels", required=True, type=Path, help="its vertebral-body labels (VerSe ids)")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument(
        "--models", type=Path, default=None, help="models folder (default: OSTEOSCREEN_MODELS or ./models)"
    )
    b.add_argument("--variants", nargs="+", default=None, help="a subset of the variants (default: all)")
    b.add_argument("--kvp", type=_kvp, default=None, help="tube voltage of the CT, when known")
    b.add_argument("--workers", type=int, default=1)
    return p


def _setup_logging(verbose: bool) -> None:
    # Warnings reach the user through summary.json and the printed table; stderr keeps the
    # one-line reason (library warnings, e.g. pydicom's about malformed values, with --verbose).
    level = logging.DEBUG if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)


def _print_table(result: ScreeningResult, out: Path) -> None:
    rows = [("level", "HU mean", "HU median", "ROI vox", "BMD mg/cm3", "category", "p(class)", "flags")]
    for v in result.vertebrae:
        p = max(v.probabilities.values()) if v.probabilities else float("nan")
        rows.append(
            (
                v.label + (" *" if v.excluded else ""),
                f"{v.roi.hu_mean:.1f}",
                f"{v.roi.hu_median:.1f}",
                str(v.roi.roi_voxels),
                "-" if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:.1f}",
                v.category or "-",
                f"{p:.2f}",
                ",".join(v.roi.flags),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    pr = result.patient
    if pr.bmd_mg_cm3 is not None:
        print(
            f"\npatient: {pr.bmd_mg_cm3:.1f} mg/cm3 -> {pr.category} (levels {', '.join(pr.levels_used)}; "
            f"classifier: {pr.classifier_category}, {'agrees' if pr.agreement else 'disagrees'})"
        )
    if any(v.excluded for v in result.vertebrae):
        print("* excluded from the patient value")
    for w in result.warnings:
        print(f"warning: {w}")
    print(
        f"\noutputs in {out}: "
        + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    )


def _kvp(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 60.0 <= v <= 150.0:
        raise argparse.ArgumentTypeError(f"{v:g} kVp is outside the CT range 60-150")
    return v


def _cmd_run(a: argparse.Namespace) -> int:
    from .config import ScreeningConfig
    from .errors import InputError, NotScreenableError
    from .pipeline import screen

    t0 = time.perf_counter()
    try:
        result = screen(
            a.input,
            a.output,
            models_dir=a.models,
            segmentation=a.segmentation,
            device=a.device,
            kvp=a.kvp,
            config=ScreeningConfig(muscle_reference=not a.no_muscle_reference),
        )
    except NotScreenableError as exc:
        sys.stderr.write(f"osteoscreen: not screenable: {exc}\n")
        return EXIT_NOT_SCREENABLE
    except InputError as exc:
        sys.stderr.write(f"osteoscreen: error: {exc}\n")
        return EXIT_ARGS
    if not a.quiet:
        _print_table(result, a.output)
        print(f"done in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def _cmd_synth(a: argparse.Namespace) -> int:
    from .synth.cohort import GENERATOR_VERSION, GENERATOR_VERSIONS, write_cohort

    if a.n < 1:
        sys.stderr.write("osteoscreen: error: --n must be at least 1\n")
        return EXIT_ARGS
    if not 0.0 <= a.dicom_share <= 1.0:
        sys.stderr.write("osteoscreen: error: --dicom-share must be between 0 and 1\n")
        return EXIT_ARGS
    version = GENERATOR_VERSION if a.generator_version is None else a.generator_version
    if version not in GENERATOR_VERSIONS:
        choices = ", ".join(map(str, GENERATOR_VERSIONS))
        sys.stderr.write(f"osteoscreen: error: --generator-version must be one of {choices}\n")
        return EXIT_ARGS
    t = time.perf_counter()
    path = write_cohort(
        a.out,
        a.n,
        a.seed,
        a.profile,
        dicom_share=a.dicom_share,
        workers=a.workers,
        generator_version=version,
    )
    print(f"wrote {a.n} {a.profile} cases in {time.perf_counter() - t:.0f} s: {path}")
    return EXIT_OK


def _cmd_example(a: argparse.Namespace) -> int:
    from .synth.example import write_example

    d = write_example(a.out, seed=a.seed, slices=a.slices, matrix=a.matrix, spacing=a.spacing, nifti=a.nifti)
    print(f"example study: {d}")
    return EXIT_OK


def _cmd_train(a: argparse.Namespace) -> int:
    if not a.cohort.is_file():
        sys.stderr.write(f"osteoscreen: error: cohort file does not exist: {a.cohort}\n")
        return EXIT_ARGS
    if a.model == "segmenter" and a.core is not None:
        sys.stderr.write("osteoscreen: error: --core applies to the DenseNets (classifier, regressor)\n")
        return EXIT_ARGS
    try:
        return _train(a)
    except ValueError as exc:
        sys.stderr.write(f"osteoscreen: error: {exc}\n")
        return EXIT_ARGS


def _train(a: argparse.Namespace) -> int:
    if a.model == "segmenter":
        from .training.segmenter import train_segmenter

        states = train_segmenter(
            a.cohort,
            a.out,
            stage=a.stage,
            iterations=a.iterations or 600,
            seed=a.seed,
            resume=not a.no_resume,
            time_limit_s=a.time_limit,
            max_cases=a.max_cases,
            init_from=a.init_from,
        )
        for name, st in states.items():
            print(f"{name}: best iteration {st.best_iteration}: {st.best_metrics}")
    else:
        from .training.densenet import train_densenet

        st = train_densenet(
            a.model,
            a.cohort,
            a.out,
            iterations=a.iterations or 800,
            seed=a.seed,
            split_seed=a.split_seed,
            resume=not a.no_resume,
            time_limit_s=a.time_limit,
            max_cases=a.max_cases,
            init_from=a.init_from,
            init_member=a.init_member,
            core=a.core,
        )
        print(f"densenet_{a.model}: best iteration {st.best_iteration}: {st.best_metrics}")
    return EXIT_OK


def _cmd_ensemble(a: argparse.Namespace) -> int:
    from .training.ensemble import build_ensemble

    for m in a.members:
        if not (m / "models" / "model.ts").is_file():
            sys.stderr.write(f"osteoscreen: error: not a bundle (no models/model.ts): {m}\n")
            return EXIT_ARGS
    if a.cohort is not None and not a.cohort.is_file():
        sys.stderr.write(f"osteoscreen: error: cohort file does not exist: {a.cohort}\n")
        return EXIT_ARGS
    try:
        val = build_ensemble(a.members, a.out, cohort=a.cohort, cache=a.cache, split_seed=a.split_seed)
    except ValueError as exc:
        sys.stderr.write(f"osteoscreen: error: {exc}\n")
        return EXIT_ARGS
    for i, m in enumerate(val.get("members", [])):
        print(f"member {i} ({a.members[i]}): validation {m}")
    if val:
        print(f"ensemble: validation {val['ensemble']} on {val['n_val_vertebrae']} vertebrae")
    print(f"ensemble of {len(a.members)}: {a.out}")
    return EXIT_OK


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .errors import InputError
    from .evaluation.run import evaluate_cohort
    from .models import default_models_dir

    if not a.cohort.is_file():
        sys.stderr.write(f"osteoscreen: error: cohort file does not exist: {a.cohort}\n")
        return EXIT_ARGS
    if a.segmentation_from is not None and not (a.segmentation_from / "cases").is_dir():
        sys.stderr.write(
            f"osteoscreen: error: --segmentation-from {a.segmentation_from} is not the --out of an "
            "earlier evaluation (it has no cases/ folder)\n"
        )
        return EXIT_ARGS
    models = a.models or default_models_dir()
    try:
        m = evaluate_cohort(
            a.cohort,
            models,
            a.out,
            name=a.name,
            workers=a.workers,
            n_boot=a.n_boot,
            max_cases=a.max_cases,
            reuse_segmentation=a.segmentation_from,
            reports=not a.no_reports,
            class_cache=a.class_cache,
        )
    except InputError as exc:
        sys.stderr.write(f"osteoscreen: error: {exc}\n")
        return EXIT_ARGS
    md = a.out / "tables.md"
    if md.exists():
        print(md.read_text())
    print(f"metrics: {a.out / 'metrics.json'} ({m['n_screened']}/{m['n_cases']} cases screened)")
    return EXIT_OK


def _cmd_floor(a: argparse.Namespace) -> int:
    import csv

    from .evaluation.floor import (
        HIDDEN_TERMS,
        REFERENCE_TRUST_SD,
        REFERENCES,
        calibration_floor,
        profile_floor,
    )

    if a.n < 1:
        sys.stderr.write("osteoscreen: error: --n must be at least 1\n")
        return EXIT_ARGS
    rows: list[dict[str, str]] = []
    if a.cohort is not None:
        params = a.cohort.parent / "synth_params.json"
        if not a.cohort.is_file() or not params.is_file():
            sys.stderr.write(
                f"osteoscreen: error: {a.cohort} is not a cohort written by `osteoscreen synth` "
                "(cohort.csv with synth_params.json beside it)\n"
            )
            return EXIT_ARGS
        with open(a.cohort, newline="") as fh:
            rows = list(csv.DictReader(fh))
    # (label, terms the reader knows, internal references it calibrates with)
    variants: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [("reference scanner assumed", (), ())]
    variants += [(f"knows {t}", (t,), ()) for t in HIDDEN_TERMS]
    variants.append(("knows gain, offset, energy_shift", ("gain", "offset", "energy_shift"), ()))
    variants.append(("knows all", HIDDEN_TERMS, ()))
    variants += [(f"{r} reference", (), (r,)) for r in REFERENCES]
    variants.append(("fat and muscle references", (), REFERENCES))
    print(f"calibration floor of {a.cohort or a.profile} (mg/cm3, patient level)")
    print(f"{'reader':36s} {'MAE':>6s} {'RMSE':>6s} {'bias':>6s} {'relative (%)':>14s} {'n':>5s}")
    for label, known, refs in variants:
        if a.cohort is not None:
            m = calibration_floor(rows, a.cohort.parent / "synth_params.json", known, refs)
            if m is None:
                sys.stderr.write(f"osteoscreen: error: no case of {a.cohort} has a patient BMD\n")
                return EXIT_ARGS
        else:
            m = profile_floor(a.profile, a.n, known=known, references=refs)
        rel = f"{m['relative_bias_pct']:+.1f} +/- {m['relative_sd_pct']:.1f}"
        print(f"{label:36s} {m['mae']:6.2f} {m['rmse']:6.2f} {m['bias']:+6.2f} {rel:>14s} {m['n']:5d}")
    print(
        "references: the reader estimates the HU gain and offset from the fat and muscle it "
        f"measures, trusting them to {REFERENCE_TRUST_SD['fat']:g} and {REFERENCE_TRUST_SD['muscle']:g} HU "
        "as the networks are trained to"
    )
    return EXIT_OK


def _cmd_robustness(a: argparse.Namespace) -> int:
    from .evaluation.robustness import VARIANTS, run_robustness
    from .models import default_models_dir

    for path in (a.image, a.labels):
        if not path.is_file():
            sys.stderr.write(f"osteoscreen: error: file does not exist: {path}\n")
            return EXIT_ARGS
    unknown = sorted(set(a.variants or []) - set(VARIANTS))
    if unknown:
        sys.stderr.write(f"osteoscreen: error: unknown variant(s) {unknown}; known: {sorted(VARIANTS)}\n")
        return EXIT_ARGS
    run_robustness(
        a.image,
        a.labels,
        a.models or default_models_dir(),
        a.out,
        names=a.variants,
        workers=a.workers,
        kvp=a.kvp,
    )
    print((a.out / "robustness.md").read_text())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    handlers = {
        "run": _cmd_run,
        "synth": _cmd_synth,
        "example": _cmd_example,
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "robustness": _cmd_robustness,
        "floor": _cmd_floor,
        "ensemble": _cmd_ensemble,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        sys.stderr.write("osteoscreen: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``| head``): stop quietly, as other tools do.
        # Where stdout is no real file descriptor (captured output) nothing is left to flush.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the one place that turns a bug into a one-line message
        if args.verbose:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(
            f"osteoscreen: internal error: {type(exc).__name__}: {msg} (run with --verbose for details)\n"
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
