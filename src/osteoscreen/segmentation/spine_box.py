"""The box around the vertebral column in which the fine segmenter works (coarse-to-fine)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..labels import SegClass

__all__ = ["SPINE_MARGINS_MM", "spine_box_from_classes"]

#: mm added around the bodies and discs: (right, left), (posterior, anterior), (inferior, superior).
#: Wide enough laterally and backwards to see the rib heads and the posterior elements.
SPINE_MARGINS_MM = ((70.0, 70.0), (80.0, 25.0), (30.0, 30.0))


def spine_box_from_classes(
    classes: np.ndarray,
    spacing: Sequence[float],
    *,
    jitter_mm: float = 0.0,
    rng: np.random.Generator | None = None,
    scale: Sequence[float] | None = None,
    target_shape: Sequence[int] | None = None,
) -> list[tuple[int, int]] | None:
    """Index box (per axis [lo, hi)) around the largest column of body and disc voxels.

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
    lab, n = ndimage.label(column)
    if n > 1:
        sizes = ndimage.sum_labels(column, lab, index=np.arange(1, n + 1))
        keep = np.argmax(sizes) + 1
        column = lab == keep
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
