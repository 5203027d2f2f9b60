"""The in-memory CT volume shared by every stage.

Convention: ``array[i, j, k]`` with a 4x4 ``affine`` mapping (i, j, k, 1) to RAS+ millimetres,
the NIfTI / nibabel convention. For a DICOM series, i runs along a row (column index),
j down the columns (row index) and k along the sorted slices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

__all__ = ["CanonicalView", "Volume", "read_nifti"]


@dataclass
class Volume:
    """A scalar volume (HU for CT) with its geometry.

    Attributes:
        array: the voxel values, indexed (i, j, k).
        affine: 4x4 voxel-to-RAS+ (mm) matrix.
        meta: study and series facts for the outputs (series uid, kVp, ...).
        source_datasets: for DICOM input, the slice headers in k order (no pixel data).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    source_datasets: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"array must be 3-D, got shape {self.array.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {aff.shape}")
        if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise ValueError("affine must be finite and invertible")
        self.affine = aff

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(s[0]), float(s[1]), float(s[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    def to_nifti(self, dtype: Any = None) -> nib.Nifti1Image:
        data = self.array if dtype is None else self.array.astype(dtype)
        img = nib.Nifti1Image(data, self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img

    def canonical(self) -> CanonicalView:
        """This volume reoriented (axis permutation and flips only) to RAS."""
        ornt = io_orientation(self.affine)
        target = axcodes2ornt(("R", "A", "S"))
        tf = ornt_transform(ornt, target)
        if np.array_equal(tf, [[0, 1], [1, 1], [2, 1]]):
            # Already RAS: no copy (a 512 x 512 x 1000 volume is 1 GB).
            return CanonicalView(self, tf, self.shape)
        # A view with permuted / negative strides; stages copy what they need.
        arr = nib.orientations.apply_orientation(self.array, tf)
        aff = self.affine @ inv_ornt_aff(tf, self.array.shape)
        return CanonicalView(replace(self, array=arr, affine=aff), tf, self.shape)


@dataclass
class CanonicalView:
    """A volume in RAS orientation and what it takes to go back to the input grid."""

    volume: Volume
    transform: np.ndarray
    original_shape: tuple[int, int, int]

    def compact(self, source: Volume | None = None) -> CanonicalView:
        """This view with its RAS array copied once into one C-contiguous block.

        Canonical views of DICOM and NIfTI volumes are transposed and flipped in memory, and
        every stage that hands them to torch or scans them would copy them again. Where
        ``source`` (the input volume) is given, its array becomes a view of the same block, so
        that only one copy of the voxels stays in memory.
        """
        arr = self.volume.array
        if arr.flags.c_contiguous:
            return self
        import torch  # a faster strided copy than numpy (2 cores, 512^2 x 300: 0.7-0.8 s vs 0.9-1.0 s)

        flips = [ax for ax in range(arr.ndim) if arr.strides[ax] < 0]
        view = arr
        for ax in flips:
            view = np.flip(view, ax)  # positive strides over the same memory
        t = torch.from_numpy(view)
        block = (t.flip(flips) if flips else t).contiguous().numpy()
        out = CanonicalView(replace(self.volume, array=block), self.transform, self.original_shape)
        if source is not None:
            source.array = out.to_original(block)
        return out

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Map an array on the canonical grid back to the input grid (exact, no resampling)."""
        return np.asarray(nib.orientations.apply_orientation(array, _inverse(self.transform)))


def _inverse(tf: np.ndarray) -> np.ndarray:
    # tf sends input axis a to tf[a, 0] (flipped if tf[a, 1] < 0); invert that mapping.
    inv = np.zeros_like(tf)
    for in_axis, (out_axis, flip) in enumerate(tf):
        inv[int(out_axis)] = [in_axis, flip]
    return inv


def read_nifti(path: str | os.PathLike[str], dtype: Any = np.float32) -> Volume:
    """A NIfTI file as a Volume (its own orientation, values cast to ``dtype``)."""
    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path} is not a NIfTI image")
    arr = np.asarray(img.dataobj, dtype=dtype)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    return Volume(arr, img.affine)
