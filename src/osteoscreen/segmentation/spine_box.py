"""The box around the vertebral column in which the fine segmenter works (coarse-to-fine)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..labels import SegClass

__all__ = ["SPINE_MARGINS_MM", "column_centre", "spine_box_from_classes"]

#: mm added around the bodies and discs: (right, left), (posterior, anterior), (inferior, superior).
#: Wide enough laterally and backwards to see the rib heads and the posterior elements.
SPINE_MARGINS_MM = ((70.0, 70.0), (80.0, 25.0), (30.0, 30.0))


#: Pieces of body / disc whose in-plane centres lie this close (mm) belong to one column.
_COLUMN_RADIUS_MM = 30.0
#: Pieces smaller than this (ml) are left out.
_MIN_PIECE_ML = 2.0


def _vertical_column(column: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The pieces of body and disc that stack into the tallest vertical column.

    The coarse stage's column can break into pieces (thick slices, osteoporotic bodies), and
    its largest piece may then be a false positive (pelvis, heart); the spine is the tallest
    stack of pieces one above the other.
    """
    lab, n = ndimage.label(column)
    if n <= 1:
        return column
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(column, lab, index=idx)
    # Specks (a few voxels of noise, a calcification) neither make a column nor widen its box.
    big = sizes * float(np.prod(spacing)) / 1000.0 >= _MIN_PIECE_ML
    if not big.any():
        return column
    idx, sizes = idx[big], sizes[big]
    cents = np.array(ndimage.center_of_mass(column, lab, idx)) * np.asarray(spacing, dtype=float)
    boxes = ndimage.find_objects(lab)
    zr = [(boxes[i - 1][2].start * spacing[2], boxes[i - 1][2].stop * spacing[2]) for i in idx]
    best: tuple[float, float, list[int]] | None = None
    for seed in np.argsort(-sizes):
        near = np.where(np.hypot(*(cents[:, :2] - cents[seed, :2]).T) <= _COLUMN_RADIUS_MM)[0]
        # Height covered by the group's pieces (union of their z ranges).
        spans = sorted(zr[i] for i in near)
        height, (lo, hi) = 0.0, spans[0]
        for a, b in spans[1:]:
            if a > hi:
                height += hi - lo
                lo, hi = a, b
            else:
                hi = max(hi, b)
        height += hi - lo
        key = (height, float(sizes[near].sum()), [int(i) for i in near])
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return np.isin(lab, idx[best[2]])


def spine_box_from_classes(
    classes: np.ndarray,
    spacing: Sequence[float],
    *,
    jitter_mm: float = 0.0,
    rng: np.random.Generator | None = None,
    scale: Sequence[float] | None = None,
    target_shape: Sequence[int] | None = None,
) -> list[tuple[int, int]] | None:
    """Index box (per axis [lo, hi)) around the vertebral column of body and disc voxels.

    Args:
        classes: tissue class map in RAS orientation.
        spacing: its voxel size in mm.
        jitter_mm: random shift of each box face (training augmentation).
        rng: randomness for the jitter.
        scale: if the box is wanted on another grid, the ratio target voxels per source voxel.
        target_shape: shape of that other grid (clips the box).

    Returns:
        The box, or None when no body was found.
    """
    column = (classes == SegClass.BODY) | (classes == SegClass.DISC)
    if not column.any():
        return None
    column = _vertical_column(column, spacing)
    idx = np.argwhere(column)
    lo = idx.min(axis=0).astype(float)
    hi = idx.max(axis=0).astype(float) + 1
    scale = tuple(scale) if scale is not None else (1.0, 1.0, 1.0)
    shape = tuple(target_shape) if target_shape is not None else classes.shape
    box = []
    for a in range(3):
        m_lo, m_hi = SPINE_MARGINS_MM[a]
        if jitter_mm > 0 and rng is not None:
            m_lo += rng.uniform(-jitter_mm, jitter_mm)
            m_hi += rng.uniform(-jitter_mm, jitter_mm)
        a_lo = (lo[a] - m_lo / spacing[a]) * scale[a]
        a_hi = (hi[a] + m_hi / spacing[a]) * scale[a]
        box.append((max(0, int(np.floor(a_lo))), min(int(shape[a]), int(np.ceil(a_hi)))))
    return box


def column_centre(classes: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float] | None:
    """Centre (voxel i, j, k) of the column ``spine_box_from_classes`` boxes, or None."""
    column = (classes == SegClass.BODY) | (classes == SegClass.DISC)
    if not column.any():
        return None
    idx = np.argwhere(_vertical_column(column, spacing))
    return float(idx[:, 0].mean()), float(idx[:, 1].mean()), float(idx[:, 2].mean())
