"""THE intensity, spacing and crop chain, shared by training, the pipeline, the MAP and MONAI Label.

Everything a network sees goes through these functions, so training and inference cannot
drift apart:

- ``normalize_hu``: CT numbers to network input (linear, clipped; bone contrast kept).
- ``resample``: a canonical (RAS) volume to a working spacing, anti-aliased when shrinking.
- ``extract_crop``: a crop of the ORIGINAL image around a point in millimetres, on a grid of
  ``crop_size`` voxels of ``spacing`` mm, optionally rotated and translated (augmentation),
  normalised with the crop normaliser. Works on any orientation through the affine.
- ``scan_context``: what the whole scan says about its own HU scale (tube voltage from the
  header; fat and soft-tissue CT numbers measured in the image, the internal references of
  phantomless calibration), and ``muscle_reference``: the paraspinal muscles behind the
  measured bodies, the near-water reference. The DenseNets receive them as constant channels
  beside the crop, so a crop of bone at 80 kVp, or on a scanner whose HU scale is off, is
  read as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CONTEXT_CHANNELS_V1",
    "CONTEXT_CHANNELS_V2",
    "HU_CLIP",
    "CropSpec",
    "ScanContext",
    "context_channels",
    "context_channels_of",
    "extract_crop",
    "float_block",
    "muscle_reference",
    "normalize_hu",
    "resample",
    "resample_labels",
    "rotation_matrix",
    "scan_context",
]

#: Range of CT numbers the networks see; metal and air beyond it carry no extra information.
HU_CLIP = (-1000.0, 2000.0)


def normalize_hu(
    hu: torch.Tensor, clip: tuple[float, float] = HU_CLIP, scale: float = 1000.0
) -> torch.Tensor:
    """Segmenter input: clip, then divide by ``scale`` (0 HU -> 0, 1000 HU -> 1)."""
    return hu.clamp(clip[0], clip[1]) / scale


def float_block(array: np.ndarray) -> torch.Tensor:
    """A contiguous float32 tensor of a 3-D array: shares its memory where it already is one.

    Canonical views may be permuted or flipped (negative strides), which torch cannot wrap;
    those are copied (:meth:`CanonicalView.compact` copies once for a whole pipeline run).
    """
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _as_5d(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        # Canonical views may have negative strides; torch needs a plain float32 block.
        return float_block(array)[None, None]
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


#: Tube voltage assumed where the header does not give one (METHOD.md's protocols are 120 kVp).
DEFAULT_KVP = 120.0
#: Search windows (HU) of the internal references, wide enough for scanner errors and kVp.
_FAT_WINDOW = (-220.0, -40.0)
_SOFT_WINDOW = (0.0, 110.0)
#: A fat peak outside this range is not adipose tissue (a crop around the spine with little
#: fat finds the window's edge instead): the reference is then not used.
_FAT_PLAUSIBLE = (-150.0, -60.0)
#: Fewer reference voxels than this (after 4x4x2 averaging) and the reference is not trusted.
_MIN_REF_VOXELS = 500
#: The paraspinal muscles (erector spinae, multifidus) behind a vertebral body, relative to
#: its trabecular ROI centre in mm: posterior range, lateral range on each side (the midline
#: strip holds the spinous process, whose marrow can be as dark as muscle), and half-height.
_MUSCLE_POSTERIOR_MM = (30.0, 80.0)
_MUSCLE_LATERAL_MM = (12.0, 45.0)
_MUSCLE_HALF_HEIGHT_MM = 10.0
#: Muscle lies near water; its peak is searched in this window (wide for scanner errors, kVp
#: and contrast) and trusted only inside the plausible range (fatty muscle of the elderly
#: still lies above 15 HU; above 90 HU the peak is not muscle).
_MUSCLE_WINDOW = (-10.0, 120.0)
_MUSCLE_PLAUSIBLE = (15.0, 90.0)
#: Muscle minus fat (HU) that the DenseNets were trained on: a scanner error moves both
#: references together, a fatty or otherwise unusual muscle moves only one. The synthetic
#: training cohort has 152 +- 12 HU, +- 15.5 with the training jitter of the muscle
#: reference; outside 3 SD of that the muscle is not used (the networks were trained to read
#: without it, for 10 % of samples).
_MUSCLE_MINUS_FAT = (105.0, 200.0)
#: Fewer averaged muscle voxels than this behind a body and that body gives no reference.
_MIN_MUSCLE_VOXELS = 150
#: The context channels of the first context-aware bundles (the default of ``vector``).
CONTEXT_CHANNELS_V1 = ("kvp", "fat_hu", "fat_reference_used")
#: The channels of bundles that also read the paraspinal muscle reference.
CONTEXT_CHANNELS_V2 = (*CONTEXT_CHANNELS_V1, "muscle_hu", "muscle_reference_used")


def context_channels_of(inference: dict[str, object]) -> list[str]:
    """The context channels a bundle's ``inference.json`` names: none where it has no
    ``context``, the first bundles' three where it names none."""
    spec = inference.get("context")
    if not spec:
        return []
    channels = spec.get("channels") if isinstance(spec, dict) else None
    return [str(c) for c in channels] if channels else list(CONTEXT_CHANNELS_V1)


@dataclass(frozen=True)
class ScanContext:
    """Scan-level facts the DenseNets get beside the crop.

    Attributes:
        kvp: tube voltage (DICOM KVP); ``DEFAULT_KVP`` where unknown.
        fat_hu: CT number of adipose tissue (histogram mode inside the fat window), None when
            the image holds too little fat.
        soft_hu: CT number of the soft-tissue peak (reported, not given to the networks: on
            real scans it mixes muscle, organs, bowel and fluid).
        kvp_known: False when ``kvp`` is the default.
        muscle_hu: CT number of the paraspinal muscles behind the measured bodies
            (``muscle_reference``), None when not measured. With fat it is the second internal
            reference of phantomless QCT: near water, so it carries the scanner's offset.
    """

    kvp: float = DEFAULT_KVP
    fat_hu: float | None = None
    soft_hu: float | None = None
    kvp_known: bool = False
    muscle_hu: float | None = None

    @property
    def fat_usable(self) -> bool:
        return self.fat_hu is not None and _FAT_PLAUSIBLE[0] <= self.fat_hu <= _FAT_PLAUSIBLE[1]

    @property
    def muscle_usable(self) -> bool:
        """A muscle peak in the plausible range and, where there is fat, as far above it as the
        networks were trained on (``_MUSCLE_MINUS_FAT``)."""
        if self.muscle_hu is None or not _MUSCLE_PLAUSIBLE[0] <= self.muscle_hu <= _MUSCLE_PLAUSIBLE[1]:
            return False
        if self.fat_usable and self.fat_hu is not None:
            return _MUSCLE_MINUS_FAT[0] <= self.muscle_hu - self.fat_hu <= _MUSCLE_MINUS_FAT[1]
        return True

    def vector(self, channels: Sequence[str] = CONTEXT_CHANNELS_V1) -> list[float]:
        """The networks' extra input channels, in the order a bundle names them.

        Bundles name their channels (``inference.context.channels``), so a bundle trained
        before a channel existed still gets exactly the ones it was trained with.
        """
        fat = (self.fat_hu + 100.0) / 20.0 if self.fat_usable and self.fat_hu is not None else 0.0
        muscle = (self.muscle_hu - 50.0) / 20.0 if self.muscle_usable and self.muscle_hu is not None else 0.0
        values = {
            "kvp": (self.kvp - DEFAULT_KVP) / 20.0,
            "fat_hu": fat,
            "fat_reference_used": 1.0 if self.fat_usable else 0.0,
            "muscle_hu": muscle,
            "muscle_reference_used": 1.0 if self.muscle_usable else 0.0,
        }
        unknown = [c for c in channels if c not in values]
        if unknown:
            raise ValueError(f"unknown context channel(s) {unknown}; known: {sorted(values)}")
        return [values[c] for c in channels]

    def with_scale_error(self, gain: float, offset: float) -> ScanContext:
        """The context of the same scan on a scanner whose HU scale is ``hu * gain + offset``."""
        return replace(
            self,
            fat_hu=None if self.fat_hu is None else self.fat_hu * gain + offset,
            soft_hu=None if self.soft_hu is None else self.soft_hu * gain + offset,
            muscle_hu=None if self.muscle_hu is None else self.muscle_hu * gain + offset,
        )

    def without_fat(self) -> ScanContext:
        return replace(self, fat_hu=None)

    def without_muscle(self) -> ScanContext:
        return replace(self, muscle_hu=None)

    def with_muscle(self, muscle_hu: float | None) -> ScanContext:
        return replace(self, muscle_hu=muscle_hu)

    def to_dict(self) -> dict[str, object]:
        return {
            "kvp": self.kvp,
            "kvp_known": self.kvp_known,
            "fat_hu": None if self.fat_hu is None else round(self.fat_hu, 1),
            "fat_reference_used": self.fat_usable,
            "soft_tissue_hu": None if self.soft_hu is None else round(self.soft_hu, 1),
            "muscle_hu": None if self.muscle_hu is None else round(self.muscle_hu, 1),
            "muscle_reference_used": self.muscle_usable,
        }


def _histogram_mode(
    values: np.ndarray, window: tuple[float, float], min_voxels: int = _MIN_REF_VOXELS
) -> float | None:
    v = values[(values >= window[0]) & (values <= window[1])]
    if v.size < min_voxels:
        return None
    bins = np.arange(window[0], window[1] + 2.0, 2.0)
    hist, edges = np.histogram(v, bins=bins)
    from scipy.ndimage import gaussian_filter1d

    smooth = gaussian_filter1d(hist.astype(np.float64), 2.0, mode="constant")
    k = int(np.argmax(smooth))
    return float((edges[k] + edges[k + 1]) / 2.0)


def scan_context(array: np.ndarray | torch.Tensor, kvp: float | None) -> ScanContext:
    """Measure the internal references of a CT volume (any orientation).

    The image is first averaged over 4 x 4 x 2 voxel blocks, so that noise (up to ~100 HU in
    low-dose scans) does not smear the fat and soft-tissue peaks; a block that mixes tissues
    falls between the peaks and does not move them.
    """
    t = _as_5d(array)
    k = [min(4, t.shape[2]), min(4, t.shape[3]), min(2, t.shape[4])]
    small = F.avg_pool3d(t, kernel_size=k, stride=k).numpy().ravel()
    known = kvp is not None and 60.0 <= float(kvp) <= 150.0
    return ScanContext(
        kvp=float(kvp) if known else DEFAULT_KVP,  # type: ignore[arg-type]
        fat_hu=_histogram_mode(small, _FAT_WINDOW),
        soft_hu=_histogram_mode(small, _SOFT_WINDOW),
        kvp_known=known,
    )


def muscle_reference(
    array: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    centres_mm: Sequence[Sequence[float]],
) -> float | None:
    """CT number of the paraspinal muscles behind the given vertebral bodies (RAS volume).

    Behind each body (``centres_mm``: trabecular ROI centres, RAS mm) two boxes left and right
    of the midline hold the erector spinae and multifidus at every level from T1 to L5. The
    box is averaged over ~3 mm blocks (low-dose noise) and the soft-tissue peak of its
    histogram taken; the scan's reference is the median over the bodies, so one body whose
    box holds a kidney, the table or a fatty muscle does not move it. None where no body has
    enough muscle behind it (a field of view cut just behind the spine).
    """
    arr = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    aff = np.asarray(affine, dtype=np.float64)
    inv = np.linalg.inv(aff)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    k = [max(1, int(round(3.0 / float(sp)))) for sp in spacing]

    def span(centre: float, lo_mm: float, hi_mm: float, axis: int) -> slice:
        lo = int(np.floor(centre + lo_mm / spacing[axis]))
        hi = int(np.ceil(centre + hi_mm / spacing[axis])) + 1
        return slice(max(0, lo), min(arr.shape[axis], hi))

    modes = []
    for c in centres_mm:
        v = inv @ np.array([*map(float, c), 1.0])
        ys = span(v[1], -_MUSCLE_POSTERIOR_MM[1], -_MUSCLE_POSTERIOR_MM[0], 1)
        zs = span(v[2], -_MUSCLE_HALF_HEIGHT_MM, _MUSCLE_HALF_HEIGHT_MM, 2)
        values = []
        for side in (-1.0, 1.0):
            lo, hi = sorted((side * _MUSCLE_LATERAL_MM[0], side * _MUSCLE_LATERAL_MM[1]))
            xs = span(v[0], lo, hi, 0)
            box = arr[xs, ys, zs]
            if min(box.shape) < 1:
                continue
            t = _as_5d(box)
            kk = [min(k[i], t.shape[2 + i]) for i in range(3)]
            values.append(F.avg_pool3d(t, kernel_size=kk, stride=kk).numpy().ravel())
        if values:
            m = _histogram_mode(np.concatenate(values), _MUSCLE_WINDOW, _MIN_MUSCLE_VOXELS)
            if m is not None:
                modes.append(m)
    return float(np.median(modes)) if modes else None


def context_channels(
    crops: torch.Tensor,
    context: ScanContext | Sequence[float],
    channels: Sequence[str] = CONTEXT_CHANNELS_V1,
) -> torch.Tensor:
    """Append the context as constant channels to (N, 1, X, Y, Z) or (1, X, Y, Z) crops.

    ``channels`` names them (a bundle's ``inference.context.channels``); a plain sequence of
    numbers is appended as it is.
    """
    vec = context.vector(channels) if isinstance(context, ScanContext) else list(context)
    c = torch.tensor(vec, dtype=crops.dtype)
    shape = list(crops.shape)
    chan_axis = len(shape) - 4
    shape[chan_axis] = len(vec)
    view = [1] * len(shape)
    view[chan_axis] = len(vec)
    return torch.cat([crops, c.view(view).expand(shape)], dim=chan_axis)
