"""Training of the DenseNet classifier (focal loss) and regressor (MSE) on vertebra crops."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import FocalLoss

from ..config import CATEGORIES, DEFAULT_CONFIG
from ..networks import CalibratedDenseNet
from ..transforms import CONTEXT_CHANNELS_V2, CropSpec, context_channels, context_channels_of
from .common import TrainState, export_bundle, load_init_weights, model_device, seed_everything, train_loop
from .data import (
    VertebraSample,
    augment_crop,
    prepare_all,
    prepare_vertebra_samples,
    read_cohort,
    split_cases,
)

__all__ = ["BMD_SCALE", "DEFAULT_CROP", "DENSENET_ARGS", "cohort_info", "train_densenet"]

log = logging.getLogger(__name__)

DEFAULT_CROP = CropSpec()
#: The regressor predicts BMD / BMD_SCALE (targets near 1 train better than near 100).
BMD_SCALE = 100.0
#: Scanner HU-scale errors simulated in training (share of samples, gain SD, offset SD in HU).
SCALE_ERROR_P = 0.7
SCALE_ERROR_GAIN_SD = 0.04
SCALE_ERROR_OFFSET_SD = 10.0
#: Share of samples trained as if the scan had no usable fat reference.
FAT_DROPOUT_P = 0.15
#: Share of samples trained as if no paraspinal muscle reference had been found.
MUSCLE_DROPOUT_P = 0.1
#: Noise (HU SD) added to the muscle reference in training, so that the networks do not trust
#: it more than real patients allow: the generator varies muscle by 5 HU, real paraspinal
#: muscle far more with fatty infiltration (18-21 HU in ../shared's real abdominal CT, against
#: the generator's 50); with this noise the reference varies by about 11 HU.
MUSCLE_JITTER_SD = 10.0
#: The scan context the DenseNets take as extra channels (transforms.ScanContext.vector).
CONTEXT_CHANNELS = list(CONTEXT_CHANNELS_V2)
#: Half-widths (voxels of the crop) of the central trabecular core the calibrated head reads:
#: 11 x 11 x 7 voxels, 16.5 x 16.5 x 10.5 mm at 1.5 mm, inside the trabecular bone of T12-L4.
#: The first bundles read 7 x 7 x 5 (3, 3, 2); on 200 synthetic test patients (seed 1003,
#: reference bodies) the session-9 regressor given the wider core at inference had patient
#: MAE 4.60 against 4.89 mg/cm3; (7, 7, 4) was worse (5.59, bias +3.9 against +1.2).
CORE_HALF_WIDTH = (5, 5, 3)
DENSENET_ARGS: dict[str, Any] = {
    "init_features": 16,
    "growth_rate": 12,
    "block_config": [3, 4, 6],
    "bn_size": 2,
    "dropout_prob": 0.1,
}


def _fit_hu_line(
    model: CalibratedDenseNet, samples: list[VertebraSample], spec: CropSpec
) -> tuple[float, float]:
    """The training cohort's least-squares line from core CT number to BMD (both / 100)."""
    with torch.no_grad():
        h = torch.cat(
            [
                model.core_hu(torch.stack([augment_crop(s, spec, None) for s in samples[i : i + 64]]))
                for i in range(0, len(samples), 64)
            ]
        ).numpy()
    bmd = np.array([s.bmd for s in samples])
    slope, intercept = np.polyfit(h / 100.0, bmd / BMD_SCALE, 1)
    log.info("HU line of the training crops: BMD = %.3f x HU %+.1f", slope, intercept * BMD_SCALE)
    return float(slope), float(intercept)


def cohort_info(cohort: Path, n_rows: int) -> dict[str, Any]:
    """What the bundle records about its training data (the generator's seed where known)."""
    info: dict[str, Any] = {"path": str(cohort), "n_cases": n_rows}
    params = Path(cohort).parent / "synth_params.json"
    if params.exists():
        p = json.loads(params.read_text())
        info.update({"synthetic": True, "seed": p.get("seed"), "profile": p.get("profile"), "n": p.get("n")})
        info["generator_version"] = p.get("generator_version")
    return info


def _bundle_inference(bundle: Path) -> dict[str, Any] | None:
    """A bundle's ``configs/inference.json``, None for a folder without one."""
    path = Path(bundle) / "configs" / "inference.json"
    return json.loads(path.read_text()) if path.is_file() else None


def bundle_context_channels(bundle: Path) -> list[str]:
    """The context channels a bundle was trained with (fine-tuning must keep them).

    A folder without a bundle gets today's channels (``load_init_weights`` then says what is
    missing)."""
    inference = _bundle_inference(bundle)
    return list(CONTEXT_CHANNELS) if inference is None else context_channels_of(inference)


def bundle_core(bundle: Path) -> tuple[int, int, int]:
    """The core half-widths a bundle's calibrated DenseNet reads (fine-tuning keeps them unless
    told otherwise); today's ``CORE_HALF_WIDTH`` for a folder without one."""
    net = (_bundle_inference(bundle) or {}).get("network_def")
    core = net.get("core") if isinstance(net, dict) else None
    if not core or len(core) != 3:
        return CORE_HALF_WIDTH
    return (int(core[0]), int(core[1]), int(core[2]))


def _check_core(core: Sequence[int], spec: CropSpec) -> tuple[int, int, int]:
    if len(core) != 3 or any(int(c) < 0 for c in core):
        raise ValueError(f"core: three half-widths >= 0 expected, got {list(core)}")
    full = [2 * int(c) + 1 for c in core]
    if any(f > n for f, n in zip(full, spec.crop_size)):
        raise ValueError(f"core {list(core)} ({full} voxels) does not fit the crop {list(spec.crop_size)}")
    return (int(core[0]), int(core[1]), int(core[2]))


def _batches(
    samples: list[VertebraSample], spec: CropSpec, task: str, batch: int, channels: list[str]
) -> Any:
    thresholds = DEFAULT_CONFIG.thresholds
    classes = np.array([thresholds.class_index(s.bmd) for s in samples])
    # Balanced sampling over the three classes (focal loss handles what imbalance remains).
    by_class = [np.where(classes == c)[0] for c in range(len(CATEGORIES))]
    by_class = [b for b in by_class if len(b)]

    def gen(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            xs, ys = [], []
            for _ in range(batch):
                group = by_class[int(rng.integers(len(by_class)))]
                s = samples[int(group[rng.integers(len(group))])]
                # A scanner whose HU scale is off (asynchronous calibration error): crop and
                # internal references shift together, the truth does not.
                gain, offset = 1.0, 0.0
                if rng.random() < SCALE_ERROR_P:
                    gain = float(rng.normal(1.0, SCALE_ERROR_GAIN_SD))
                    offset = float(rng.normal(0.0, SCALE_ERROR_OFFSET_SD))
                x = augment_crop(s, spec, rng, gain=gain, offset=offset)
                # More noise than the scan had (low-dose scans).
                if rng.random() < 0.5:
                    x = x + torch.randn_like(x) * float(rng.uniform(0, 25)) / spec.norm_scale
                ctx = s.context.with_scale_error(gain, offset)
                if ctx.muscle_hu is not None:
                    ctx = ctx.with_muscle(ctx.muscle_hu + float(rng.normal(0.0, MUSCLE_JITTER_SD)))
                if rng.random() < FAT_DROPOUT_P:
                    # Scans without a usable fat reference (a tight field of view) must still work.
                    ctx = ctx.without_fat()
                if rng.random() < MUSCLE_DROPOUT_P:
                    ctx = ctx.without_muscle()
                xs.append(context_channels(x, ctx, channels))
                if task == "classifier":
                    ys.append(torch.tensor(thresholds.class_index(s.bmd)))
                else:
                    ys.append(torch.tensor([s.bmd / BMD_SCALE], dtype=torch.float32))
            yield torch.stack(xs), torch.stack(ys)

    return gen


def _evaluate(val_x: torch.Tensor, val_bmd: np.ndarray, task: str) -> Any:
    thresholds = DEFAULT_CONFIG.thresholds
    y_cls = np.array([thresholds.class_index(b) for b in val_bmd])

    def run(model: torch.nn.Module) -> dict[str, float]:
        dev = model_device(model)
        outs = torch.cat([model(val_x[i : i + 32].to(dev)).cpu() for i in range(0, len(val_x), 32)])
        if task == "classifier":
            from ..evaluation.metrics import classification_metrics

            prob = torch.softmax(outs, dim=1).numpy()
            m = classification_metrics(y_cls, prob, n_boot=0)
            return {
                "auc_macro": float(m["auc_macro"] or 0.0),
                "accuracy": float(m["accuracy"]),
                "f1": float(m["f1"]),
            }
        pred = outs[:, 0].numpy() * BMD_SCALE
        err = pred - val_bmd
        pred_cls = np.array([thresholds.class_index(b) for b in pred])
        return {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "accuracy": float((pred_cls == y_cls).mean()),
        }

    return run


def train_densenet(
    task: str,
    cohort: Path,
    out: Path,
    *,
    iterations: int = 800,
    batch: int = 16,
    seed: int = 0,
    split_seed: int | None = None,
    val_fraction: float = 0.15,
    spec: CropSpec = DEFAULT_CROP,
    resume: bool = True,
    progress: bool = True,
    time_limit_s: float | None = None,
    max_cases: int | None = None,
    init_from: Path | None = None,
    init_member: int = 0,
    core: Sequence[int] | None = None,
) -> TrainState:
    """Train ``task`` ("classifier" or "regressor") and export ``out/densenet_<task>``.

    ``init_from`` (a models folder) fine-tunes: training starts from that folder's bundle of the
    same name (a run that already has checkpoints resumes from them instead), with the context
    channels and core that bundle was trained with (from an ensemble bundle: its member
    ``init_member``). ``core`` (half-widths in crop voxels) overrides the core; by default
    ``CORE_HALF_WIDTH``, or the ``init_from`` bundle's.
    ``split_seed`` (default: ``seed``) draws the
    validation split, so that the members of an ensemble (``seed`` 0, 1, ...) can share one
    split and be compared, and combined, on cases none of them trained on.
    """
    if task not in ("classifier", "regressor"):
        raise ValueError(f"task must be 'classifier' or 'regressor', got {task!r}")
    name = f"densenet_{task}"
    channels = CONTEXT_CHANNELS if init_from is None else bundle_context_channels(Path(init_from) / name)
    if core is None:
        core = CORE_HALF_WIDTH if init_from is None else bundle_core(Path(init_from) / name)
    core_hw = _check_core(core, spec)
    rows = read_cohort(cohort)
    if max_cases:
        rows = rows[:max_cases]
    rng = seed_everything(seed)
    train_rows, val_rows = split_cases(rows, val_fraction, seed if split_seed is None else split_seed)
    cache = Path(out) / "cache"
    prep = functools.partial(prepare_vertebra_samples, spec=spec, cache=cache)
    per_case = prepare_all(prep, rows, "prepare vertebra crops", progress)
    samples: dict[str, list[VertebraSample]] = {r.case_id: s for r, s in zip(rows, per_case)}
    tr = [s for r in train_rows for s in samples[r.case_id]]
    va = [s for r in val_rows for s in samples[r.case_id]]
    if not tr or not va:
        raise ValueError(
            f"cohort {cohort}: {len(tr)} training and {len(va)} validation vertebrae; both must be > 0"
        )
    val_x = torch.stack([context_channels(augment_crop(s, spec, None), s.context, channels) for s in va])
    val_bmd = np.array([s.bmd for s in va])
    in_channels = 1 + len(channels)
    thresholds = DEFAULT_CONFIG.thresholds
    head: dict[str, Any] = {
        "norm_center": spec.norm_center,
        "norm_scale": spec.norm_scale,
        "core": list(core_hw),
        "crop_spacing": spec.spacing[1],
        "thresholds": [thresholds.osteoporosis_upper, thresholds.normal_lower],
    }
    model = CalibratedDenseNet(task, in_channels=in_channels, **head, **DENSENET_ARGS)
    line = _fit_hu_line(model, tr, spec)
    with torch.no_grad():
        model.slope.fill_(line[0])
        model.intercept.fill_(line[1])
    sdir = Path(out) / name
    init_info: dict[str, str] = {}
    if init_from is not None and not (sdir / "checkpoints" / "last.pt").exists():
        init_info = load_init_weights(model, Path(init_from) / name, member=init_member)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iterations, pct_start=0.1)
    if task == "classifier":
        focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)

        def loss_fn(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return focal(pred, y[:, None])

        def score(m: dict[str, float]) -> float:
            return 0.5 * m["auc_macro"] + 0.25 * m["accuracy"] + 0.25 * m["f1"]
    else:
        mse = torch.nn.MSELoss()

        def loss_fn(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return mse(pred, y)

        def score(m: dict[str, float]) -> float:
            # Combined: MAE in mg/cm3 and the category accuracy it implies.
            return -m["mae"] / 10.0 + m["accuracy"]

    state = train_loop(
        model=model,
        optimizer=opt,
        batches=_batches(tr, spec, task, batch, channels),
        loss_fn=loss_fn,
        evaluate=_evaluate(val_x, val_bmd, task),
        score=score,
        out=sdir,
        iterations=iterations,
        rng=rng,
        resume=resume,
        desc=name,
        progress=progress,
        scheduler=sched,
        time_limit_s=time_limit_s,
    )
    export_bundle(
        sdir,
        model,
        name=name,
        description=(
            "DenseNet 3-class BMD category (normal, osteopenia, osteoporosis), focal loss; "
            "ordinal head on the calibrated core CT number"
            if task == "classifier"
            else f"DenseNet BMD regressor (mg/cm3 = output x {BMD_SCALE:g}), MSE; calibrates the "
            "crop's core CT number (per-scan slope and intercept)"
        ),
        network={
            "_target_": "osteoscreen.networks.make_calibrated_densenet",
            "task": task,
            "in_channels": in_channels,
            **head,
            **DENSENET_ARGS,
        },
        inference={
            **spec.to_dict(),
            "context": {"channels": channels, "default_kvp": 120.0},
            "output": {"classes": list(CATEGORIES)}
            if task == "classifier"
            else {"bmd_scale": BMD_SCALE, "unit": "mg/cm3"},
        },
        state=state,
        cohort={
            **cohort_info(cohort, len(rows)),
            "n_train_vertebrae": len(tr),
            "n_val_vertebrae": len(va),
            **init_info,
        },
        example_input=torch.zeros(2, in_channels, *spec.crop_size),
        extra={"training_seed": seed, "split_seed": seed if split_seed is None else split_seed},
    )
    return state
