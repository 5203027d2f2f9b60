"""A classical spine finder, independent of the networks: the column of bone pieces stacked
along the trunk's midline (canonical RAS grid, +y anterior).

Slice by slice at 4 mm, bone (> 150 HU) is split into pieces; a vertebra (body and arch) is
the hindmost piece of 3-40 cm2 near the trunk's left-right middle and behind its front 40 %
(which holds the sternum and the bowel; a contrast-filled aorta, as dense as bone, lies
beside and in front of the spine). The finder keeps the longest chain of such pieces that moves at
most 10 mm sideways and 30 mm front-back from one to the next (a slice may hold the body and
the next only its arch), with gaps of up to 20 mm (the discs), at least
60 mm long. It does not count or label vertebrae; it says where the spine is.

It serves two ends:

- a fallback for the coarse stage's box: when the coarse network finds no column, or one
  off the bone column (``off_column``), the fine stage runs around the bone column instead
  and the result says so (``FALLBACK_WARNING``): osteoporotic bodies the coarse network
  misses, a pelvis it takes for the spine;
- quality control: when most VB-Net bodies lie off the bone column, the result says so
  (``check_bodies``).

Where no chain is long enough (a scan cut to a few vertebrae, bone too faint) it returns
None and nothing changes; it never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..transforms import resample

__all__ = ["FALLBACK_WARNING", "SpineColumn", "check_bodies", "find_spine_column", "off_column"]

FALLBACK_WARNING = (
    "fallback: the fine segmenter ran around the bone column found by the classical spine "
    "finder (the coarse network's column was missing or far from it); review the key image"
)

_SPACING = 4.0
_BONE_HU = 150.0
#: A vertebral body's cross-section at 4 mm (cm2): T1 about 5, L5 about 20, plus the arch.
_BODY_AREA_CM2 = (3.0, 40.0)
#: Centres of one chain's neighbouring pieces lie this close (mm) sideways and front-back
#: (a slice may hold the body and the next only its arch) ...
_STEP_MM = (10.0, 30.0)
#: ... with at most this much (mm) without bone between them (a disc).
_MAX_GAP_MM = 20.0
#: A chain must be at least this long (mm) to be a spine: two bodies and a disc.
_MIN_LENGTH_MM = 60.0
#: Where a body may lie around the column's centre (mm): sideways, behind, in front.
_SIDEWAYS_MM = 30.0
_BEHIND_MM = 20.0
_BODY_AHEAD_MM = 60.0


@dataclass
class SpineColumn:
    """The bone column's centre per slice of the input grid (voxel i, j) where it was found."""

    k: np.ndarray  # slice indices on the input grid
    ij: np.ndarray  # (n, 2) column centre (voxel i, j) on the input grid
    spacing: tuple[float, float, float]

    @property
    def length_mm(self) -> float:
        return float((self.k.max() - self.k.min() + 1) * self.spacing[2]) if self.k.size else 0.0

    def centre_at(self, k: float) -> tuple[float, float]:
        """Column centre (voxel i, j) at slice ``k``, interpolated, held flat beyond the ends."""
        order = np.argsort(self.k)
        ks = self.k[order].astype(float)
        return (
            float(np.interp(k, ks, self.ij[order, 0])),
            float(np.interp(k, ks, self.ij[order, 1])),
        )

    def box(self, shape: tuple[int, int, int]) -> list[tuple[int, int]]:
        """An index box around the column, with the coarse stage's margins."""
        from .spine_box import SPINE_MARGINS_MM

        sp = self.spacing
        i_c, j_c = self.ij[:, 0], self.ij[:, 1]
        lo = [i_c.min(), j_c.min(), float(self.k.min())]
        hi = [i_c.max(), j_c.max() + _BODY_AHEAD_MM / sp[1], float(self.k.max())]
        out = []
        for a in range(3):
            m_lo, m_hi = SPINE_MARGINS_MM[a]
            out.append(
                (
                    max(0, int(np.floor(lo[a] - m_lo / sp[a]))),
                    min(shape[a], int(np.ceil(hi[a] + 1 + m_hi / sp[a]))),
                )
            )
        return out


def _candidates(bone: np.ndarray, trunk: np.ndarray, sp: float) -> list[tuple[float, float, float]]:
    """The hindmost body-sized piece of one axial slice's bone near the trunk's left-right
    middle, behind its front 40 %: [(i, j, area cm2)] or []."""
    if trunk.sum() * sp * sp / 100.0 < 100.0:  # less than 100 cm2 of trunk: not a torso slice
        return []
    lab, n = ndimage.label(bone)
    if n == 0:
        return []
    ti, tj = np.nonzero(trunk)
    i_mid = (ti.min() + ti.max()) / 2.0
    half_w = (ti.max() - ti.min()) / 2.0
    j_front = tj.min() + 0.6 * (tj.max() - tj.min())  # +j is anterior
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(bone, lab, idx) * sp * sp / 100.0
    cents = ndimage.center_of_mass(bone, lab, idx)
    out = [
        (float(ci), float(cj), float(a))
        for a, (ci, cj) in zip(area, cents)
        if _BODY_AREA_CM2[0] <= a <= _BODY_AREA_CM2[1] and abs(ci - i_mid) <= 0.2 * half_w and cj <= j_front
    ]
    # The hindmost: a contrast-filled aorta runs beside and in front of the spine, never behind.
    return sorted(out, key=lambda c: c[1])[:1]


def find_spine_column(
    hu: np.ndarray | torch.Tensor, spacing: tuple[float, float, float]
) -> SpineColumn | None:
    """The vertebral column's course through a canonical CT, or None where none is found."""
    small = resample(hu, spacing, (_SPACING,) * 3)[0, 0].numpy()
    trunk = ndimage.binary_fill_holes(small > -400.0)
    bone = small > _BONE_HU
    per_slice = [_candidates(bone[:, :, k], trunk[:, :, k], _SPACING) for k in range(small.shape[2])]
    # Longest chain of pieces, each within _STEP_MM of the last one, gaps up to _MAX_GAP_MM.
    step_i, step_j = (m / _SPACING for m in _STEP_MM)
    gap = int(round(_MAX_GAP_MM / _SPACING)) + 1
    best: list[tuple[int, float, float]] = []
    chains: list[list[tuple[int, float, float]]] = []
    for k, cands in enumerate(per_slice):
        chains = [c for c in chains if c[-1][0] >= k - gap]
        grown = []
        for ci, cj, _ in cands:
            prev = [c for c in chains if abs(c[-1][1] - ci) <= step_i and abs(c[-1][2] - cj) <= step_j]
            base = max(prev, key=lambda c: c[-1][0] - c[0][0]) if prev else []
            grown.append([*base, (k, ci, cj)])
        chains += grown
        for c in grown:
            if not best or c[-1][0] - c[0][0] > best[-1][0] - best[0][0]:
                best = c
    if not best or (best[-1][0] - best[0][0] + 1) * _SPACING < _MIN_LENGTH_MM:
        return None
    pts = np.array(best, dtype=float)
    scale = [s_out / s_in for s_in, s_out in zip(hu.shape, small.shape)]
    # Back to the input grid (voxel centres, align_corners=False geometry).
    to_in = [(pts[:, 1 + a] + 0.5) / scale[a] - 0.5 for a in (0, 1)]
    ks = np.round((pts[:, 0] + 0.5) / scale[2] - 0.5).astype(int)
    return SpineColumn(ks, np.stack(to_in, axis=1), spacing)


def off_column(column: SpineColumn, i: float, j: float, k: float) -> bool:
    """Whether a vertebral body centred at voxel (i, j, k) cannot belong to the column.

    The column's pieces hold the arch as well as the body, and in a very osteoporotic spine
    only the arch is bright enough to be found, so a body may lie up to ``_BODY_AHEAD_MM`` in
    front of the column's centre; sideways it must stay within ``_SIDEWAYS_MM``.
    """
    sp = column.spacing
    ci, cj = column.centre_at(k)
    ahead = (j - cj) * sp[1]
    return bool(abs(i - ci) * sp[0] > _SIDEWAYS_MM or not -_BEHIND_MM <= ahead <= _BODY_AHEAD_MM)


def check_bodies(column: SpineColumn, centroids: list[tuple[float, float, float]]) -> list[int]:
    """Indices of the body centroids (voxel i, j, k) that lie off the classical column."""
    return [n for n, (i, j, k) in enumerate(centroids) if off_column(column, i, j, k)]
