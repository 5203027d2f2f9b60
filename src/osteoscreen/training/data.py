"""Training samples from a cohort CSV: segmenter volumes and DenseNet vertebra crops.

Every sample is made with the shared chain in ``osteoscreen.transforms`` and the ROI code in
``osteoscreen.roi``: what the networks see in training is what they see in the pipeline.
Prepared samples are cached as .npz next to the training output, so a resumed or repeated
run does not read the CT volumes again.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..config import DEFAULT_CONFIG
from ..io.volume import Volume, read_nifti
from ..labels import id_to_name
from ..roi.measure import measure_labelled_body
from ..segmentation.spine_box import spine_box_from_classes
from ..transforms import (
    CropSpec,
    ScanContext,
    extract_crop,
    muscle_reference,
    resample,
    resample_labels,
    scan_context,
)

__all__ = [
    "CohortRow",
    "SegSample",
    "VertebraSample",
    "augment_crop",
    "prepare_seg_sample",
    "prepare_vertebra_samples",
    "read_cohort",
    "split_cases",
]

log = logging.getLogger(__name__)


@dataclass
class CohortRow:
    case_id: str
    image: Path
    label: Path | None
    classes: Path | None
    bmd: dict[str, float]
    excluded: list[str]
    raw: dict[str, str]


def row_kvp(row: CohortRow) -> float | None:
    """The row's tube voltage (column ``kvp``), None where absent or not a number."""
    try:
        return float((row.raw.get("kvp") or "").strip())
    except ValueError:
        return None


def read_cohort(path: Path) -> list[CohortRow]:
    """Rows of a cohort CSV; image / label paths are relative to the CSV's folder.

    Raises:
        ValueError: when a required column is missing, naming it.
    """
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        for need in ("case_id", "image"):
            if need not in cols:
                raise ValueError(f"cohort {path} has no {need!r} column (columns: {sorted(cols)})")
        rows = []
        for r in reader:

            def rel(key: str, r: dict[str, str] = r) -> Path | None:
                v = (r.get(key) or "").strip()
                if not v:
                    return None
                p = Path(v)
                return p if p.is_absolute() else path.parent / p

            bmd = {}
            for k, v in r.items():
                if k and k.startswith("bmd_") and v not in ("", None):
                    bmd[k[4:]] = float(v)
            image = rel("image")
            if image is None:
                raise ValueError(f"cohort {path}: case {r.get('case_id')} has no image path")
            rows.append(
                CohortRow(
                    case_id=r["case_id"],
                    image=image,
                    label=rel("label"),
                    classes=rel("classes"),
                    bmd=bmd,
                    excluded=(r.get("excluded_levels") or "").split(),
                    raw=dict(r),
                )
            )
    return rows


def prepare_all(
    fn: Callable[[CohortRow], Any], rows: list[CohortRow], desc: str, progress: bool = True
) -> list[Any]:
    """``fn`` over every row, in worker processes (reading and resampling CT is the slow part)."""
    from tqdm import tqdm

    workers = min(len(rows), os.cpu_count() or 1)
    with tqdm(total=len(rows), desc=desc, disable=not progress) as bar:
        if workers <= 1:
            out = []
            for r in rows:
                out.append(fn(r))
                bar.update()
            return out
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            results = []
            for res in pool.map(fn, rows):
                results.append(res)
                bar.update()
            return results


def split_cases(
    rows: list[CohortRow], val_fraction: float, seed: int
) -> tuple[list[CohortRow], list[CohortRow]]:
    """Seeded case-level split into training and validation rows."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    n_val = max(1, int(round(len(rows) * val_fraction))) if len(rows) > 1 else 0
    val = [rows[i] for i in order[:n_val]]
    train = [rows[i] for i in order[n_val:]]
    return train, val


def _load_canonical(path: Path) -> Volume:
    return read_nifti(path).canonical().volume


@dataclass
class SegSample:
    """One case for the segmenter: coarse whole volume and fine spine crop, images and classes."""

    coarse_image: np.ndarray
    coarse_classes: np.ndarray
    fine_image: np.ndarray
    fine_classes: np.ndarray


def prepare_seg_sample(
    row: CohortRow, coarse_spacing: float, fine_spacing: float, cache: Path, seed: int
) -> SegSample:
    """Resample a case for both segmenter stages (cached; the box jitter is seeded per case)."""
    rng = np.random.default_rng([seed, zlib.crc32(row.case_id.encode())])
    f = cache / f"seg_{row.case_id}_{coarse_spacing:g}_{fine_spacing:g}.npz"
    if f.exists():
        d = np.load(f)
        return SegSample(d["ci"], d["cc"], d["fi"], d["fc"])
    if row.classes is None:
        raise ValueError(f"case {row.case_id} has no 'classes' map: the segmenter needs tissue classes")
    vol = _load_canonical(row.image)
    cls = _load_canonical(row.classes).array
    sp = vol.spacing
    c_img = resample(vol.array, sp, (coarse_spacing,) * 3)[0, 0]
    c_cls = resample_labels(cls, c_img.shape)
    box = spine_box_from_classes(cls, sp, jitter_mm=8.0, rng=rng)
    if box is None:
        raise ValueError(f"case {row.case_id}: no vertebral body in its class map")
    sl = tuple(slice(a, b) for a, b in box)
    f_img = resample(vol.array[sl], sp, (fine_spacing,) * 3)[0, 0]
    f_cls = resample_labels(cls[sl], f_img.shape)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        ci=c_img.numpy().astype(np.float16),
        cc=c_cls.numpy().astype(np.uint8),
        fi=f_img.numpy().astype(np.float16),
        fc=f_cls.numpy().astype(np.uint8),
    )
    tmp.replace(f)
    return SegSample(
        c_img.numpy(), c_cls.numpy().astype(np.uint8), f_img.numpy(), f_cls.numpy().astype(np.uint8)
    )


@dataclass
class VertebraSample:
    """A vertebra's crop (HU, larger than the network input, for augmentation) and its truth."""

    case_id: str
    level: str
    bmd: float
    crop_hu: np.ndarray
    crop_affine: np.ndarray
    roi_hu_mean: float = float("nan")  # trabecular ROI mean of the reference body (HU-rule baseline)
    context: ScanContext = field(default_factory=ScanContext)  # the whole scan's kVp and references


def _margin_spec(spec: CropSpec, margin_vox: int) -> CropSpec:
    # The cached crop: same spacing, wider, and raw HU (identity normaliser, wide clip).
    size = (
        spec.crop_size[0] + 2 * margin_vox,
        spec.crop_size[1] + 2 * margin_vox,
        spec.crop_size[2] + 2 * margin_vox,
    )
    return CropSpec(
        crop_size=size, spacing=spec.spacing, norm_center=0.0, norm_scale=1.0, clip=(-1024.0, 3071.0)
    )  # type: ignore[arg-type]


def prepare_vertebra_samples(
    row: CohortRow, spec: CropSpec, cache: Path, margin_vox: int = 8
) -> list[VertebraSample]:
    """Crops around each labelled vertebra's trabecular ROI centre (cached per case)."""
    key = "x".join(str(v) for v in spec.crop_size) + "_" + "x".join(f"{v:g}" for v in spec.spacing)
    f = cache / f"vert_{row.case_id}_{key}_m{margin_vox}_ctx3.npz"
    big = _margin_spec(spec, margin_vox)
    kvp = row_kvp(row)
    if f.exists():
        d = np.load(f, allow_pickle=False)
        if "context" in d:
            c = d["context"]  # kvp, fat, soft, kvp known, muscle (NaN: not found)
            ctx = ScanContext(
                float(c[0]),
                None if np.isnan(c[1]) else float(c[1]),
                None if np.isnan(c[2]) else float(c[2]),
                bool(c[3]),
                None if np.isnan(c[4]) else float(c[4]),
            )
            return [
                VertebraSample(
                    row.case_id,
                    str(lv),
                    float(b),
                    d["crops"][i].astype(np.float32),
                    d["affines"][i],
                    float(h),
                    ctx,
                )
                for i, (lv, b, h) in enumerate(zip(d["levels"], d["bmd"], d["roi_hu"]))
            ]
    if row.label is None:
        raise ValueError(f"case {row.case_id} has no label map: crops are centred on the labelled bodies")
    vol = _load_canonical(row.image)
    lab = _load_canonical(row.label).array.astype(np.int16)
    ctx = scan_context(vol.array, kvp)
    out: list[VertebraSample] = []
    centres: list[tuple[float, float, float]] = []
    boxes = ndimage.find_objects(np.clip(lab, 0, 100))
    for vid in np.unique(lab):
        if vid <= 0 or vid > 100 or boxes[vid - 1] is None:
            continue
        name = id_to_name(int(vid))
        if name not in row.bmd or name in row.excluded:
            continue
        box = boxes[vid - 1]
        # Skip bodies cut by the scan's edge: their truth is fine but the image is not.
        if box[2].start == 0 or box[2].stop == lab.shape[2]:
            continue
        # The same measurement as the pipeline's (ROI, QC, centre), on the reference body.
        m, _, _ = measure_labelled_body(
            vol.array, lab, box, int(vid), vol.affine, vol.spacing, DEFAULT_CONFIG
        )
        centres.append(m.center_mm)
        if m.roi_voxels < DEFAULT_CONFIG.min_roi_voxels or "central_core_roi" in m.flags:
            continue
        crop = extract_crop(vol.array, vol.affine, m.center_mm, big)[0].numpy()
        aff = np.diag([*spec.spacing, 1.0])
        aff[:3, 3] = np.asarray(m.center_mm) - (np.asarray(big.crop_size) - 1) / 2.0 * np.asarray(
            spec.spacing
        )
        out.append(VertebraSample(row.case_id, name, row.bmd[name], crop, aff, m.hu_mean, ctx))
    # The paraspinal muscle reference behind the measured bodies, as the pipeline measures it.
    ctx = ctx.with_muscle(muscle_reference(vol.array, vol.affine, centres))
    out = [replace(s, context=ctx) for s in out]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        levels=np.array([s.level for s in out], dtype="U4"),
        bmd=np.array([s.bmd for s in out], dtype=np.float32),
        roi_hu=np.array([s.roi_hu_mean for s in out], dtype=np.float32),
        crops=np.stack([s.crop_hu.astype(np.float16) for s in out])
        if out
        else np.zeros((0, *big.crop_size), np.float16),
        affines=np.stack([s.crop_affine for s in out]) if out else np.zeros((0, 4, 4)),
        context=np.array(
            [
                ctx.kvp,
                np.nan if ctx.fat_hu is None else ctx.fat_hu,
                np.nan if ctx.soft_hu is None else ctx.soft_hu,
                ctx.kvp_known,
                np.nan if ctx.muscle_hu is None else ctx.muscle_hu,
            ],
            dtype=np.float64,
        ),
    )
    tmp.replace(f)
    return out


def augment_crop(
    sample: VertebraSample,
    spec: CropSpec,
    rng: np.random.Generator | None,
    max_rot: float = 10.0,
    max_shift_mm: float = 4.0,
    gain: float = 1.0,
    offset: float = 0.0,
) -> torch.Tensor:
    """The network input for a cached crop: rotation / translation when ``rng`` is given.

    ``gain`` and ``offset`` put the crop on a scanner whose HU scale is ``hu * gain + offset``
    (the context channels must be given the same error: ``ScanContext.with_scale_error``).
    """
    from ..transforms import rotation_matrix

    centre = (
        sample.crop_affine[:3, :3] @ ((np.asarray(sample.crop_hu.shape) - 1) / 2.0)
        + sample.crop_affine[:3, 3]
    )
    hu = sample.crop_hu if gain == 1.0 and offset == 0.0 else sample.crop_hu * gain + offset
    if rng is None:
        return extract_crop(hu, sample.crop_affine, centre, spec)
    rot = rotation_matrix(rng.uniform(-max_rot, max_rot, size=3).tolist())
    shift = rng.uniform(-max_shift_mm, max_shift_mm, size=3).tolist()
    return extract_crop(hu, sample.crop_affine, centre, spec, rotation=rot, translation_mm=shift)
