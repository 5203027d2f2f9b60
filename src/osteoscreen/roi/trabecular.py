"""The trabecular ROI of a vertebral body (METHOD.md step 2) and its CT-number statistics.

A voxel of the body stays in the ROI when the body continues at least ``depth_mm`` from it
along +x, -x, +y, -y, +z and -z. The depth is converted to voxels per axis from the spacing
(anisotropic in voxels), rounding up, so at least ``depth_mm`` of bone lies on every side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["erosion_steps", "roi_extent", "trabecular_roi"]


def erosion_steps(spacing: Sequence[float], depth_mm: float) -> tuple[int, int, int]:
    """Voxels to erode along each axis for ``depth_mm`` (at least 1 each)."""
    if depth_mm <= 0:
        raise ValueError(f"depth_mm must be positive, got {depth_mm}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    return tuple(max(1, math.ceil(depth_mm / float(s) - 1e-6)) for s in spacing)  # type: ignore[return-value]


def trabecular_roi(body: np.ndarray, spacing: Sequence[float], depth_mm: float = 3.0) -> np.ndarray:
    """Erode a body mask by ``depth_mm`` in the six axis directions.

    Args:
        body: boolean mask of ONE vertebral body.
        spacing: voxel size (mm) along the mask's axes.
        depth_mm: erosion depth.

    Returns:
        Boolean ROI mask, same shape.
    """
    body = np.asarray(body, dtype=bool)
    steps = erosion_steps(spacing, depth_mm)
    roi = body.copy()
    for axis, n in enumerate(steps):
        # A line of 2n+1 voxels along one axis: the body must continue n voxels each way.
        shape = [1, 1, 1]
        shape[axis] = 2 * n + 1
        roi &= ndimage.binary_erosion(body, structure=np.ones(shape, dtype=bool), border_value=0)
    return roi


def roi_extent(
    roi: np.ndarray, affine: np.ndarray
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centre (mm, world) and width / depth / height (mm, along the world axes) of a ROI."""
    idx = np.argwhere(roi)
    if idx.size == 0:
        raise ValueError("roi is empty")
    centre_ijk = idx.mean(axis=0)
    centre = affine[:3, :3] @ centre_ijk + affine[:3, 3]
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    # Extent of the voxel centres along each world axis, plus one voxel's extent on that axis.
    voxel = np.abs(affine[:3, :3]).sum(axis=1)
    size = world.max(axis=0) - world.min(axis=0) + voxel
    return (
        (float(centre[0]), float(centre[1]), float(centre[2])),
        (float(size[0]), float(size[1]), float(size[2])),
    )
