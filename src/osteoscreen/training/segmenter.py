"""Training of the coarse and fine VB-Net stages (Dice + cross-entropy)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

from ..labels import SegClass
from ..networks import VBNet
from ..transforms import normalize_hu
from .common import TrainState, export_bundle, load_init_weights, model_device, seed_everything, train_loop
from .data import SegSample, prepare_all, prepare_seg_sample, read_cohort, split_cases
from .densenet import cohort_info

__all__ = ["COARSE", "FINE", "StageConfig", "train_segmenter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageConfig:
    """One stage of the coarse-to-fine segmenter."""

    name: str
    spacing: float
    patch: tuple[int, int, int]
    channels: tuple[int, ...]
    blocks: tuple[int, ...]
    batch: int


#: Whole volume at 4 mm: finds the column of bodies and discs.
COARSE = StageConfig("vbnet_coarse", 4.0, (48, 48, 48), (8, 16, 32, 64), (1, 1, 1), 2)
#: The column's box at 2 mm: bodies, discs, posterior elements, ribs and sacrum.
FINE = StageConfig("vbnet_fine", 2.0, (48, 48, 48), (8, 16, 32, 64), (1, 1, 1), 2)


#: Which class a foreground patch is centred on: bodies most, but the rarer classes that
#: level labelling depends on (sacrum, ribs) often enough to be learnt.
_CENTRE_CLASSES = {SegClass.BODY: 0.5, SegClass.SACRUM: 0.2, SegClass.RIB: 0.15, SegClass.DISC: 0.15}


def _random_patch(
    img: np.ndarray,
    lab: np.ndarray,
    patch: tuple[int, int, int],
    rng: np.random.Generator,
    fg_prob: float = 0.7,
    centre_classes: dict[SegClass, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    pad = [(0, max(0, p - s)) for p, s in zip(patch, img.shape)]
    if any(p[1] for p in pad):
        img = np.pad(img, pad, constant_values=-1000.0)
        lab = np.pad(lab, pad)
    weights = centre_classes or {SegClass.BODY: 1.0}
    present = [(c, w) for c, w in weights.items() if (lab == c).any()]
    if rng.random() < fg_prob and present:
        w = np.array([w for _, w in present])
        cls = present[int(rng.choice(len(present), p=w / w.sum()))][0]
        fg = np.argwhere(lab == cls)
        c = fg[rng.integers(len(fg))]
        start = [
            int(
                np.clip(
                    c[a] - patch[a] // 2 + rng.integers(-patch[a] // 4, patch[a] // 4 + 1),
                    0,
                    img.shape[a] - patch[a],
                )
            )
            for a in range(3)
        ]
    else:
        start = [int(rng.integers(0, img.shape[a] - patch[a] + 1)) for a in range(3)]
    sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
    return img[sl], lab[sl]


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Scanner variety: HU gain / offset, noise; the anatomy stays where it is.
    img = img * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-20, 20))
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(0, 40), size=img.shape).astype(np.float32)
    return img.astype(np.float32, copy=False)


def _batches(samples: list[tuple[np.ndarray, np.ndarray]], cfg: StageConfig) -> callable:  # type: ignore[valid-type]
    def gen(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            xs, ys = [], []
            for _ in range(cfg.batch):
                img, lab = samples[int(rng.integers(len(samples)))]
                pi, pl = _random_patch(img, lab, cfg.patch, rng, centre_classes=_CENTRE_CLASSES)
                pi = _augment(pi.astype(np.float32), rng)
                if rng.random() < 0.3:
                    # Left-right mirror: the anatomy is nearly symmetric about the spine.
                    pi, pl = pi[::-1].copy(), pl[::-1].copy()
                xs.append(normalize_hu(torch.from_numpy(np.ascontiguousarray(pi))))
                ys.append(torch.from_numpy(np.ascontiguousarray(pl).astype(np.int64)))
            yield torch.stack(xs)[:, None], torch.stack(ys)[:, None]

    return gen


def _pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    shape = x.shape[-3:]
    pads = [(-s) % divisor for s in shape]
    if any(pads):
        x = torch.nn.functional.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), value=-1.0)
    return x, tuple(shape)  # type: ignore[return-value]


def _val_patches(
    val: list[tuple[np.ndarray, np.ndarray]], cfg: StageConfig, n: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed set of validation patches (1.5 x the training patch), so evaluation is cheap."""
    rng = np.random.default_rng(seed + 1)
    size = tuple(3 * p // 2 for p in cfg.patch)
    out = []
    for i in range(n):
        img, lab = val[i % len(val)]
        out.append(_random_patch(img, lab, size, rng, fg_prob=0.8))  # type: ignore[arg-type]
    return out


def _dice_eval(
    val: list[tuple[np.ndarray, np.ndarray]], model: nn.Module, *, divisor: int
) -> dict[str, float]:
    dices: dict[int, list[float]] = {
        c: [] for c in (SegClass.BODY, SegClass.DISC, SegClass.RIB, SegClass.SACRUM, SegClass.POSTERIOR)
    }
    for img, lab in val:
        x = normalize_hu(torch.from_numpy(img.astype(np.float32)))[None, None]
        x, shape = _pad_to(x, divisor)
        pred = model(x.to(model_device(model)))[0].argmax(0)[: shape[0], : shape[1], : shape[2]].cpu().numpy()
        for c in dices:
            a, b = pred == c, lab == c
            if b.sum() + a.sum() > 0:
                dices[c].append(2 * float((a & b).sum()) / float(a.sum() + b.sum()))
    out = {f"dice_{SegClass(c).name.lower()}": float(np.mean(v)) if v else 0.0 for c, v in dices.items()}
    return out


def train_segmenter(
    cohort: Path,
    out: Path,
    *,
    stage: str = "both",
    iterations: int = 600,
    seed: int = 0,
    val_fraction: float = 0.15,
    resume: bool = True,
    progress: bool = True,
    time_limit_s: float | None = None,
    max_cases: int | None = None,
    init_from: Path | None = None,
) -> dict[str, TrainState]:
    """Train the coarse and / or fine VB-Net on a cohort with tissue class maps.

    Writes ``out/vbnet_coarse`` and ``out/vbnet_fine`` bundles. ``init_from`` (a models folder)
    fine-tunes: each stage starts from that folder's bundle of the same name instead of random
    weights (a run that already has checkpoints resumes from them instead).
    """
    if stage not in ("coarse", "fine", "both"):
        raise ValueError(f"stage must be coarse, fine or both, got {stage!r}")
    rows = read_cohort(cohort)
    if max_cases:
        rows = rows[:max_cases]
    if len(rows) < 2:
        raise ValueError(
            f"cohort {cohort} has {len(rows)} case(s); training needs at least 2 (one for validation)"
        )
    rng = seed_everything(seed)
    train_rows, val_rows = split_cases(rows, val_fraction, seed)
    cache = Path(out) / "cache"
    prep = functools.partial(
        prepare_seg_sample, coarse_spacing=COARSE.spacing, fine_spacing=FINE.spacing, cache=cache, seed=seed
    )
    samples = prepare_all(prep, rows, "prepare segmenter samples", progress)
    prepared: dict[str, SegSample] = {r.case_id: s for r, s in zip(rows, samples)}
    states: dict[str, TrainState] = {}
    stages = [COARSE, FINE] if stage == "both" else [COARSE if stage == "coarse" else FINE]
    for cfg in stages:
        fine = cfg is FINE

        def pick(s: SegSample, fine: bool = fine) -> tuple[np.ndarray, np.ndarray]:
            return (
                (s.fine_image.astype(np.float32), s.fine_classes)
                if fine
                else (s.coarse_image.astype(np.float32), s.coarse_classes)
            )

        tr = [pick(prepared[r.case_id]) for r in train_rows]
        va = _val_patches([pick(prepared[r.case_id]) for r in val_rows], cfg, 5, seed)
        model = VBNet(out_channels=len(SegClass), channels=cfg.channels, blocks=cfg.blocks)
        init_info: dict[str, str] = {}
        if init_from is not None and not (Path(out) / cfg.name / "checkpoints" / "last.pt").exists():
            init_info = load_init_weights(model, Path(init_from) / cfg.name)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=iterations, pct_start=0.15)
        # Batch Dice: a patch without ribs or sacrum does not punish those classes.
        loss = DiceCELoss(
            to_onehot_y=True,
            softmax=True,
            include_background=False,
            batch=True,
            lambda_ce=1.0,
            lambda_dice=1.0,
        )
        sdir = Path(out) / cfg.name
        state = train_loop(
            model=model,
            optimizer=opt,
            batches=_batches(tr, cfg),
            loss_fn=loss,
            evaluate=functools.partial(_dice_eval, va, divisor=2 ** (len(cfg.channels) - 1)),
            # Bodies matter most; discs keep them apart; the rest feeds level labelling.
            score=lambda m: (
                0.5 * m["dice_body"]
                + 0.2 * m["dice_disc"]
                + 0.1 * m["dice_rib"]
                + 0.1 * m["dice_sacrum"]
                + 0.1 * m["dice_posterior"]
            ),
            out=sdir,
            iterations=iterations,
            rng=rng,
            resume=resume,
            desc=cfg.name,
            progress=progress,
            scheduler=sched,
            time_limit_s=time_limit_s,
        )
        export_bundle(
            sdir,
            model,
            name=cfg.name,
            description=f"VB-Net {'fine' if fine else 'coarse'} stage: tissue classes at {cfg.spacing:g} mm",
            network={
                "_target_": "osteoscreen.networks.VBNet",
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": len(SegClass),
                "channels": list(cfg.channels),
                "blocks": list(cfg.blocks),
            },
            inference={
                "spacing_mm": cfg.spacing,
                "divisor": 2 ** (len(cfg.channels) - 1),
                "classes": {c.name.lower(): int(c) for c in SegClass},
                "intensity": {"transform": "osteoscreen.transforms.normalize_hu"},
                "patch": list(cfg.patch),
            },
            state=state,
            cohort={
                **cohort_info(cohort, len(rows)),
                "n_train": len(train_rows),
                "n_val": len(val_rows),
                "train_seed": seed,
                **init_info,
            },
            example_input=torch.zeros(1, 1, *cfg.patch),
        )
        states[cfg.name] = state
    return states
