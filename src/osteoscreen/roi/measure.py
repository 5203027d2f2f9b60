"""Trabecular measurements per vertebral body, with the quality checks that guard the HU.

The ROI is the paper's 3 mm erosion. On top of it:

- bone islands (dense sclerotic foci) inside the ROI are flagged, and a mean without them is
  reported beside the paper's plain ROI mean (the reference study left them in);
- metal near the body (screws, cement) excludes the body: its HU is meaningless;
- a body cut by the scan's top or bottom edge is measured but excluded from the patient value;
- a body whose anterior or middle height is well below its posterior height is flagged as a
  suspected compression fracture and excluded (METHOD.md: fractured bodies are left out);
- a ROI that is too small (a doubtful mask) falls back to a central core of the body, flagged.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..config import ScreeningConfig
from ..labels import id_to_name
from ..results import RoiMeasurement
from .trabecular import roi_extent, trabecular_roi

__all__ = ["body_heights", "fracture_suspected", "height_ratio", "measure_body", "measure_labelled_body"]

log = logging.getLogger(__name__)

_ISLAND_HU = 600.0  # trabecular bone stays well below this; islands are cortical-dense
_METAL_HU = 2000.0


def body_heights(
    body: np.ndarray,
    spacing: tuple[float, float, float],
    axis: tuple[float, float] | None = None,
) -> tuple[float, float, float] | None:
    """Posterior, middle and anterior height (mm) of a body on a RAS mask (j posterior -> anterior).

    Heights are taken as in Genant's semi-quantitative reading: on the mid-sagittal band, at
    15 %, 50 % and 85 % of the body's depth (not at its rounded front and back rims), each the
    median height of the voxel columns within 15 % of the depth around it. The columns run
    along ``axis``, the spine's own direction at the body in the sagittal plane (mm, as
    (anterior, superior) components; default straight up): a body tilted by the lordosis or
    kyphosis is measured square to its endplates, as a reader would. None for a body too thin
    to tell.
    """
    js = np.where(body.any(axis=(0, 2)))[0]
    if len(js) < 6:
        return None
    ci = int(round(np.argwhere(body)[:, 0].mean()))
    # The mid-sagittal band of the body (a few mm either side of the centre).
    half = max(1, int(5 / spacing[0]))
    sub = body[max(0, ci - half) : ci + half + 1]
    ay, az = (0.0, 1.0) if axis is None else axis
    norm = float(np.hypot(ay, az))
    ay, az = (0.0, 1.0) if norm == 0 else (ay / norm, az / norm)
    if az < 0:
        ay, az = -ay, -az
    step = spacing[1] * az + spacing[2] * abs(ay)
    extent = spacing[1] * abs(ay) + spacing[2] * az

    def depth_of(jj: np.ndarray, kk: np.ndarray) -> np.ndarray:  # square to the axis (mm)
        return jj * spacing[1] * az - kk * spacing[2] * ay

    _, bj, bk = np.nonzero(body)
    whole = depth_of(bj, bk)
    ii, jj, kk = np.nonzero(sub)
    u = depth_of(jj, kk)
    v = jj * spacing[1] * ay + kk * spacing[2] * az  # height, along the axis
    # Columns one voxel wide across the axis, counted from the whole body's back; each voxel
    # adds its own extent along the axis.
    col = np.round((u - whole.min()) / step).astype(int)
    depth = float(np.round((whole.max() - whole.min()) / step))  # in columns
    heights = []
    for frac in (0.15, 0.5, 0.85):
        lo = max(0, int(round(frac * depth - 0.15 * depth)))
        hi = max(lo, int(round(frac * depth + 0.15 * depth)))
        near = (col >= lo) & (col <= hi)
        if not near.any():
            heights.append(0.0)
            continue
        # Height of each (band row i, column) pair: highest minus lowest voxel, plus one voxel.
        key = ii[near] * (int(col.max()) + 1) + col[near]
        order = np.argsort(key, kind="stable")
        _, starts = np.unique(key[order], return_index=True)
        vv = v[near][order]
        top = np.maximum.reduceat(vv, starts)
        bottom = np.minimum.reduceat(vv, starts)
        heights.append(float(np.median(top - bottom + extent)))
    return heights[0], heights[1], heights[2]


def height_ratio(
    body: np.ndarray, spacing: tuple[float, float, float], axis: tuple[float, float] | None = None
) -> float:
    """min(anterior, middle) / posterior body height (1.0 where it cannot be told)."""
    h = body_heights(body, spacing, axis)
    if h is None or h[0] <= 0:
        return 1.0
    return min(h[1], h[2]) / h[0]


def fracture_suspected(
    body: np.ndarray,
    spacing: tuple[float, float, float],
    max_ratio: float,
    axis: tuple[float, float] | None = None,
) -> bool:
    """Height ratio below ``max_ratio`` by more than the slices can blur: the missing height
    must exceed 1.5 slice spacings (with 5 mm slices one slice more or less is 20 % of a
    lumbar body, as much as a grade 1 fracture)."""
    h = body_heights(body, spacing, axis)
    if h is None or h[0] <= 0:
        return False
    post, mid, ant = h
    return min(mid, ant) / post < max_ratio and post - min(mid, ant) > 1.5 * spacing[2]


def measure_body(
    hu: np.ndarray,
    body: np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, float, float],
    label_id: int,
    config: ScreeningConfig,
    *,
    touches_edge: bool = False,
    axis: tuple[float, float] | None = None,
) -> tuple[RoiMeasurement, np.ndarray]:
    """Measure one body (mask on the canonical grid); returns the measurement and its ROI mask."""
    flags: list[str] = []
    # Work in the body's bounding box (plus a margin for the metal check): fast on big volumes.
    sl = ndimage.find_objects(body.astype(np.uint8))[0]
    pad = [int(np.ceil(10.0 / s)) for s in spacing]
    box = tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(sl, pad, body.shape))
    b = body[box]
    h = hu[box]
    roi = trabecular_roi(b, spacing, config.erosion_mm)
    if int(roi.sum()) < config.min_roi_voxels:
        # Doubtful mask (thin, fragmented): a central core of the body instead.
        dist = ndimage.distance_transform_edt(b, sampling=spacing)
        core = dist >= max(1.0, 0.5 * float(dist.max()))
        roi = core & b
        flags.append("central_core_roi")
    if touches_edge:
        flags.append("partial_in_view")
    if (h[ndimage.binary_dilation(b, iterations=2)] > _METAL_HU).sum() >= 5:
        flags.append("metal")
    values = h[roi]
    robust: float | None = None
    dense = values > _ISLAND_HU
    if dense.sum() >= 3:
        islands = roi & (h > _ISLAND_HU)
        # Grow a little: the island's blurred rim is also too dense to be trabecular bone.
        islands = ndimage.binary_dilation(islands, iterations=1) & roi
        if islands.sum() < 0.5 * roi.sum():
            robust = float(h[roi & ~islands].mean())
            flags.append("bone_island")
    if not touches_edge and fracture_suspected(b, spacing, config.fracture_height_ratio, axis):
        flags.append("fracture_suspected")
    if values.size == 0:
        values = h[b]
        flags.append("empty_roi")
    full_roi = np.zeros(body.shape, dtype=bool)
    full_roi[box] = roi
    sub_aff = affine.copy()
    sub_aff[:3, 3] = affine[:3, :3] @ np.array([s.start for s in box]) + affine[:3, 3]
    if roi.any():
        centre, size = roi_extent(roi, sub_aff)
    else:
        centre, size = roi_extent(b, sub_aff)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return (
        RoiMeasurement(
            label_id=label_id,
            label=id_to_name(label_id),
            roi_voxels=int(roi.sum()),
            body_voxels=int(b.sum()),
            hu_mean=float(values.mean()),
            hu_median=float(np.median(values)),
            hu_mean_without_islands=robust,
            hu_std=float(values.std()),
            center_mm=centre,
            size_mm=size,
            roi_volume_ml=int(roi.sum()) * voxel_ml,
            flags=flags,
        ),
        full_roi,
    )


def measure_labelled_body(
    hu: np.ndarray,
    labels: np.ndarray,
    box: tuple[slice, ...],
    label_id: int,
    affine: np.ndarray,
    spacing: tuple[float, float, float],
    config: ScreeningConfig,
    *,
    touches_edge: bool = False,
    axis: tuple[float, float] | None = None,
) -> tuple[RoiMeasurement, np.ndarray, tuple[slice, ...]]:
    """``measure_body`` for one id of a label map, on the id's bounding ``box`` plus 15 mm.

    The same numbers as on the whole volume (measure_body's own margin is 10 mm) without a
    whole-volume pass per body. Returns the measurement, the ROI mask and the sub-box it is on.
    """
    pad = [int(np.ceil(15.0 / s)) for s in spacing]
    sub = tuple(slice(max(0, b.start - q), min(n, b.stop + q)) for b, q, n in zip(box, pad, labels.shape))
    sub_aff = affine.copy()
    sub_aff[:3, 3] = affine[:3, :3] @ np.array([b.start for b in sub]) + affine[:3, 3]
    m, roi = measure_body(
        hu[sub],
        labels[sub] == label_id,
        sub_aff,
        spacing,
        label_id,
        config,
        touches_edge=touches_edge,
        axis=axis,
    )
    return m, roi, sub
