"""Real CTs with whole-vertebra labels (VerSe) as segmenter training cases.

VerSe labels each vertebra whole (body and posterior elements together); the segmenter's
classes separate the BODY from the POSTERIOR elements and mark the DISCs between bodies. Here:

- the body is what survives a morphological opening of the vertebra by a ball (default radius
  4 mm): pedicles, laminae and processes are thinner than that, the body is 25-45 mm across;
  its largest component is kept, the rest of the vertebra is POSTERIOR;
- a disc is the space between two consecutive labelled bodies, inside the outline that both
  bodies share when projected onto the axial plane;
- ribs and sacrum are not labelled in VerSe: where the current segmenter sees them they stay
  (pseudo-labels), so that training on real cases does not teach "rib = background"; its other
  predictions inside the labelled span are replaced by the expert labels;
- the case is cropped along the body axis to the labelled span (plus half a vertebra), so
  unlabelled vertebrae above and below are not taught as background.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..errors import NotScreenableError
from ..io.volume import Volume, read_nifti
from ..labels import SegClass
from ..models import Bundle

__all__ = ["body_from_vertebra", "classes_from_whole_vertebrae", "real_case_rows"]

log = logging.getLogger(__name__)


def _ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    r = [max(1, int(round(radius_mm / s))) for s in spacing]
    grid = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    dist = np.zeros([2 * n + 1 for n in r])
    for g, s in zip(grid, spacing):
        dist = dist + (g * s / radius_mm) ** 2
    return np.asarray(dist <= 1.0)


def _opened_body(sub: np.ndarray, spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    opened = ndimage.binary_opening(sub, structure=_ball(radius_mm, spacing))
    lab, n = ndimage.label(opened)
    if n == 0:
        return np.zeros_like(sub)
    sizes = ndimage.sum(opened, lab, range(1, n + 1))
    return ndimage.binary_dilation(lab == (int(np.argmax(sizes)) + 1), iterations=1) & sub  # type: ignore[no-any-return]


def body_from_vertebra(
    mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float = 6.0
) -> np.ndarray:
    """The vertebral-body part of one whole-vertebra mask (canonical RAS grid: +y anterior).

    The spinal canal is the hole the vertebra closes around in axial slices; everything from
    its front wall backwards (pedicles, laminae, processes) is posterior. Where no canal is
    closed (a cropped or broken arch), the body is what survives an opening by a ball of
    ``radius_mm``: the posterior elements are thinner than the body.
    """
    if not mask.any():
        return mask.copy()
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    pad = [max(1, int(round(radius_mm / s)) + 1) for s in spacing]
    box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, mask.shape))
    sub = mask[box]
    canal = np.zeros_like(sub)
    for k in range(sub.shape[2]):
        if sub[:, :, k].any():
            canal[:, :, k] = ndimage.binary_fill_holes(sub[:, :, k]) & ~sub[:, :, k]
    body = np.zeros_like(sub)
    if canal.sum() * spacing[0] * spacing[1] * spacing[2] >= 100.0:  # at least 0.1 ml of canal
        # The canal's front wall: per slice its most anterior voxel, the median over slices
        # (a slice through the foramina or the disc opens a larger hole than the canal).
        fronts = [
            int(np.where(canal[:, :, k].any(axis=0))[0].max())
            for k in range(canal.shape[2])
            if canal[:, :, k].any()
        ]
        front = int(np.median(fronts))
        body = sub.copy()
        body[:, : front + 1, :] = False
        lab, n = ndimage.label(body)
        if n:
            sizes = ndimage.sum(body, lab, range(1, n + 1))
            body = lab == (int(np.argmax(sizes)) + 1)
    if body.sum() < 0.2 * sub.sum():
        body = _opened_body(sub, spacing, radius_mm)
    out = np.zeros_like(mask)
    out[box] = body
    return out


def classes_from_whole_vertebrae(
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Tissue classes and body ids from whole-vertebra VerSe labels (canonical RAS grid).

    Returns:
        (classes uint8, body ids int16, the labelled span along k as (start, stop)).
    """
    ids = [int(v) for v in np.unique(labels) if 0 < v <= 28]
    classes = np.zeros(labels.shape, dtype=np.uint8) if base is None else base.astype(np.uint8).copy()
    ks = np.where((labels > 0).any(axis=(0, 1)))[0]
    k0, k1 = int(ks.min()), int(ks.max()) + 1
    span = classes[:, :, k0:k1]
    # Inside the labelled span the experts decide bodies, posterior elements and discs.
    for c in (SegClass.BODY, SegClass.POSTERIOR, SegClass.DISC):
        span[span == c] = SegClass.BACKGROUND
    bodies = np.zeros(labels.shape, dtype=np.int16)
    for v in ids:
        m = labels == v
        b = body_from_vertebra(m, spacing)
        bodies[b] = v
        classes[m & ~b] = SegClass.POSTERIOR
        classes[b] = SegClass.BODY
    # Discs between consecutive bodies (by id: VerSe ids run top to bottom).
    for upper, lower in itertools.pairwise(ids):
        if lower != upper + 1:
            continue
        bu, bl = bodies == upper, bodies == lower
        foot = ndimage.binary_erosion(bu.any(axis=2) & bl.any(axis=2), iterations=1)
        if not foot.any():
            continue
        # Per (i, j) column: from the lower body's top to the upper body's bottom (RAS: k up).
        kk = np.arange(labels.shape[2])[None, None, :]
        top_lower = np.where(bl, kk, -1).max(axis=2)
        bottom_upper = np.where(bu, kk, labels.shape[2]).min(axis=2)
        gap_ok = foot & (top_lower >= 0) & ((bottom_upper - top_lower - 1) * spacing[2] <= 20.0)
        gap = gap_ok[:, :, None] & (kk > top_lower[:, :, None]) & (kk < bottom_upper[:, :, None])
        classes[gap & (labels == 0)] = SegClass.DISC
    return classes, bodies, (k0, k1)


def real_case_rows(
    pairs: list[tuple[str, Path, Path]], out: Path, segmenter: tuple[Bundle, Bundle] | None
) -> list[dict[str, Any]]:
    """Segmenter cohort rows (image, classes, label) for real CTs with whole-vertebra labels.

    ``pairs`` are (case id, CT path, VerSe label path); ``segmenter`` (coarse, fine) supplies
    the rib and sacrum pseudo-labels. Files are written to ``out``.
    """
    from ..segmentation.inference import segment_classes

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case_id, ct, lab in pairs:
        img = read_nifti(ct).canonical().volume
        labv = read_nifti(lab, dtype=np.float64)
        labels = Volume(np.round(labv.array).astype(np.int16), labv.affine).canonical().volume.array
        if labels.shape != img.shape:
            log.warning(
                "%s: label grid %s differs from the CT's %s; skipped", case_id, labels.shape, img.shape
            )
            continue
        base = None
        if segmenter is not None:
            try:
                base = segment_classes(img, segmenter[0], segmenter[1]).classes
            except NotScreenableError:
                base = None
        classes, bodies, (k0, k1) = classes_from_whole_vertebrae(labels, img.spacing, base)
        # Crop along k to the labelled span plus a few mm: unlabelled vertebrae stay out.
        margin = max(1, int(round(6.0 / img.spacing[2])))
        a, b = max(0, k0 - margin), min(img.shape[2], k1 + margin)
        aff = img.affine.copy()
        aff[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, a]) + img.affine[:3, 3]
        paths = {}
        for key, arr, dt in (
            ("image", img.array[:, :, a:b], np.int16),
            ("classes", classes[:, :, a:b], np.uint8),
            ("label", bodies[:, :, a:b], np.int16),
        ):
            p = out / f"{case_id}_{key}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(arr).astype(dt), aff), p)
            paths[key] = str(p)
        rows.append({"case_id": case_id, **paths, "source": "real (VerSe whole-vertebra labels)"})
    return rows


def verse_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(case id, CT, whole-vertebra label) for every ``*_ct.nii.gz`` with its ``*_seg-vert_msk.nii.gz``."""
    out = []
    for ct in sorted(Path(folder).glob("*_ct.nii.gz")):
        case = ct.name[: -len("_ct.nii.gz")]
        lab = ct.with_name(f"{case}_seg-vert_msk.nii.gz")
        if lab.is_file():
            out.append((case, ct, lab))
    return out


def finetune_on_real(
    cohort: Path,
    verse_dir: Path,
    out: Path,
    init_from: Path,
    *,
    iterations: int = 2000,
    repeat: int = 20,
    seed: int = 3,
    progress: bool = True,
    stage: str = "fine",
) -> Any:
    """Fine-tune the VB-Net (``stage``: fine, coarse or both) on the synthetic ``cohort`` plus
    the real VerSe CTs.

    Each real case is listed ``repeat`` times (its crops are jittered per listing), so real
    patches make up a fair share of the batches although there are few of them. Writes
    ``out/vbnet_fine`` (and / or ``out/vbnet_coarse``); returns the TrainStates by bundle name.
    """
    import csv

    import torch

    from ..models import _load_bundle
    from .segmenter import train_segmenter

    out = Path(out).resolve()
    pairs = verse_pairs(verse_dir)
    if not pairs:
        raise ValueError(f"no VerSe CT with labels in {verse_dir}")
    cpu = torch.device("cpu")
    segmenter = (
        _load_bundle(Path(init_from) / "vbnet_coarse", cpu),
        _load_bundle(Path(init_from) / "vbnet_fine", cpu),
    )
    real = real_case_rows(pairs, out / "real", segmenter)
    rows = []
    with open(cohort, newline="") as fh:
        for r in csv.DictReader(fh):
            row = {"case_id": r["case_id"]}
            for k in ("image", "label", "classes"):
                p = Path(r[k])
                row[k] = str(p if p.is_absolute() else (Path(cohort).parent / p).resolve())
            rows.append(row)
    for r in real:
        for i in range(repeat):
            rows.append(
                {"case_id": f"{r['case_id']}-r{i:02d}", **{k: r[k] for k in ("image", "label", "classes")}}
            )
    mixed = out / "cohort_real.csv"
    with open(mixed, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "image", "label", "classes"])
        w.writeheader()
        w.writerows(rows)
    return train_segmenter(
        mixed, out, stage=stage, iterations=iterations, seed=seed, init_from=init_from, progress=progress
    )
