"""THE intensity, spacing and crop chain, shared by training, the pipeline, the MAP and MONAI Label.

Everything a network sees goes through these functions, so training and inference cannot
drift apart:

- ``normalize_hu``: CT numbers to network input (linear, clipped; bone contrast kept).
- ``resample``: a canonical (RAS) volume to a working spacing, anti-aliased when shrinking.
- ``extract_crop``: a crop of the ORIGINAL image around a point in millimetres, on a grid of
  ``crop_size`` voxels of ``spacing`` mm, optionally rotated and translated (augmentation),
  normalised with the crop normaliser. Works on any orientation through the affine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "HU_CLIP",
    "CropSpec",
    "extract_crop",
    "normalize_hu",
    "resample",
    "resample_labels",
    "rotation_matrix",
]

#: Range of CT numbers the networks see; metal and air beyond it carry no extra information.
HU_CLIP = (-1000.0, 2000.0)


def normalize_hu(
    hu: torch.Tensor, clip: tuple[float, float] = HU_CLIP, scale: float = 1000.0
) -> torch.Tensor:
    """Segmenter input: clip, then divide by ``scale`` (0 HU -> 0, 1000 HU -> 1)."""
    return hu.clamp(clip[0], clip[1]) / scale


def _as_5d(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        # Canonical views may have negative strides; torch needs a plain float32 block.
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    t = array if array.dtype == torch.float32 else array.float()
    return t[None, None]


def resample(
    array: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    target: Sequence[float],
    *,
    size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Resample a 3-D volume to ``target`` spacing (trilinear; box-filtered first when shrinking).

    Returns:
        A float32 tensor of shape (1, 1, X, Y, Z).
    """
    t = _as_5d(array)
    factors = [float(t_) / float(s) for s, t_ in zip(spacing, target)]
    pool = [max(1, int(math.floor(f))) for f in factors]
    if any(p > 1 for p in pool):
        t = F.avg_pool3d(t, kernel_size=pool, stride=pool, ceil_mode=True)
    if size is None:
        size = [max(1, round(n * s / tg)) for n, s, tg in zip(array.shape[-3:], spacing, target)]
    if list(t.shape[-3:]) != list(size):
        t = F.interpolate(t, size=tuple(int(v) for v in size), mode="trilinear", align_corners=False)
    return t


def resample_labels(labels: np.ndarray | torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resampling of a label map to ``size`` (returns int64 (X, Y, Z))."""
    t = torch.as_tensor(np.asarray(labels, dtype=np.int64) if isinstance(labels, np.ndarray) else labels)
    t = t[None, None].float()
    out = F.interpolate(t, size=tuple(int(v) for v in size), mode="nearest")
    return out[0, 0].long()


@dataclass(frozen=True)
class CropSpec:
    """The DenseNet sample: METHOD.md's crop_size, spacing and crop_normalizers.

    Attributes:
        crop_size: voxels along (R-L, A-P, S-I).
        spacing: mm per voxel of the crop.
        norm_center: HU mapped to 0.
        norm_scale: HU per unit after normalisation.
        clip: HU range before normalisation.
    """

    crop_size: tuple[int, int, int] = (64, 64, 24)
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    norm_center: float = 100.0
    norm_scale: float = 300.0
    clip: tuple[float, float] = (-1000.0, 1500.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "crop_size": list(self.crop_size),
            "spacing": list(self.spacing),
            "crop_normalizers": {
                "center": self.norm_center,
                "scale": self.norm_scale,
                "clip": list(self.clip),
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> CropSpec:
        n = d.get("crop_normalizers", {})
        if not isinstance(n, dict):
            raise TypeError("crop_normalizers must be a mapping")
        size = [int(v) for v in d["crop_size"]]  # type: ignore[attr-defined]
        sp = [float(v) for v in d["spacing"]]  # type: ignore[attr-defined]
        return cls(
            crop_size=(size[0], size[1], size[2]),
            spacing=(sp[0], sp[1], sp[2]),
            norm_center=float(n.get("center", 100.0)),
            norm_scale=float(n.get("scale", 300.0)),
            clip=tuple(n.get("clip", (-1000.0, 1500.0))),  # type: ignore[arg-type]
        )


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def extract_crop(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    center_mm: Sequence[float],
    spec: CropSpec,
    *,
    rotation: np.ndarray | None = None,
    translation_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Sample a normalised crop of ``volume`` around ``center_mm`` (RAS mm).

    The crop axes are the RAS axes (rotated by ``rotation`` if given), so the crop looks the
    same whatever the orientation of the stored volume. Outside the volume reads as air.

    Returns:
        float32 tensor (1, X, Y, Z) with X, Y, Z = spec.crop_size.
    """
    size = np.asarray(spec.crop_size)
    offs = [(np.arange(n) - (n - 1) / 2.0) * sp for n, sp in zip(size, spec.spacing)]
    gx, gy, gz = np.meshgrid(*offs, indexing="ij")
    pts = np.stack([gx, gy, gz], axis=-1).reshape(-1, 3)
    if rotation is not None:
        pts = pts @ np.asarray(rotation).T
    pts = pts + np.asarray(center_mm, dtype=np.float64) + np.asarray(translation_mm, dtype=np.float64)
    inv = np.linalg.inv(affine)
    ijk = pts @ inv[:3, :3].T + inv[:3, 3]
    # Only the block of voxels the crop touches is normalised and sampled (volumes are large).
    full = np.asarray(volume.shape[-3:])
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 1, 0, full)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 2, 0, full)
    if np.any(hi <= lo):  # entirely outside: a crop of air
        lo, hi = np.zeros(3, dtype=int), np.minimum(full, 1)
    volume = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    ijk = ijk - lo
    shape = np.asarray(volume.shape[-3:], dtype=np.float64)
    # grid_sample wants (x, y, z) = (last, middle, first) dims normalised to [-1, 1].
    norm = (ijk + 0.5) / shape * 2.0 - 1.0
    grid = torch.from_numpy(norm[:, ::-1].copy()).float().reshape(1, *size.tolist(), 3)
    vol = _as_5d(volume)
    lo, hi = spec.clip
    vol = (vol.clamp(lo, hi) - spec.norm_center) / spec.norm_scale
    air = (lo - spec.norm_center) / spec.norm_scale
    out = F.grid_sample(vol - air, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + air
    return out[0]
