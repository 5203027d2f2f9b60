"""From a tissue map to CT numbers: calibration, contrast, beam hardening, blur and noise.

The chain follows what a scanner does to a patient: every tissue has a true attenuation
(bone from its mineral density through a kVp-dependent calibration, iodine raising blood
and, a little, marrow), the body's size hardens the beam, the reconstruction kernel blurs,
the slice profile averages along z, and quantum noise (shaped by the kernel) is added.
The scanner's own HU scale error (gain and offset, as in asynchronous calibration) acts
on everything, so internal references (air, fat, muscle, blood) carry it too.

Scanners differ in beam filtration, so the same nominal kVp gives another effective energy
on another vendor's machine. That difference is modelled as a shift of the effective kVp
(``energy_shift``) and acts on every energy-dependent material together (bone, iodine, fat),
as it does in a real scanner; only a small bone-specific residual (``calib_slope`` jitter)
is invisible in the rest of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy import Tissue

__all__ = [
    "FAT_SD",
    "MUSCLE_SD",
    "ScanParams",
    "bone_factor",
    "bone_hu",
    "effective_kvp",
    "fat_hu",
    "muscle_hu",
    "render_ct",
]


@dataclass
class ScanParams:
    """Scanner and protocol parameters of one synthetic acquisition."""

    kvp: int
    scanner: str
    kernel: str  # "soft", "standard" or "sharp"
    noise_hu: float  # noise standard deviation in a uniform region (HU)
    blur_mm: float  # in-plane point spread (Gaussian sigma, mm)
    slice_thickness: float
    contrast_phase: str  # "native", "arterial", "portal"
    calib_slope: float  # mg/cm3 of mineral per HU of trabecular bone at 120 kVp
    gain: float  # scanner HU scale error (1 = exact)
    offset: float  # scanner HU offset error
    beam_hardening: float  # fractional loss of bone HU per 100 mm of extra trunk size
    energy_shift: float = 0.0  # the vendor's effective-energy offset, in kVp-equivalent


def _energy_curve(table: dict[int, float], kvp: float) -> float:
    """Piecewise-linear in kVp, extended linearly beyond the table's ends."""
    ks = sorted(table)
    if kvp <= ks[0]:
        k0, k1 = ks[0], ks[1]
    elif kvp >= ks[-1]:
        k0, k1 = ks[-2], ks[-1]
    else:
        k1 = next(k for k in ks if k >= kvp)
        k0 = ks[ks.index(k1) - 1] if k1 != ks[0] else k1
        if k0 == k1:
            return table[k0]
    t = (kvp - k0) / (k1 - k0)
    return table[k0] + t * (table[k1] - table[k0])


def effective_kvp(scan: ScanParams) -> float:
    """The tube voltage a reference scanner would need for the same effective energy."""
    return float(scan.kvp) + scan.energy_shift


def bone_factor(scan: ScanParams) -> float:
    """Bone HU relative to 120 kVp on the reference scanner (higher at lower energy)."""
    return _energy_curve(_KVP_BONE, effective_kvp(scan))


_KVP_BONE = {80: 1.32, 100: 1.14, 120: 1.0, 140: 0.91}
_KVP_FAT = {80: -118.0, 100: -108.0, 120: -100.0, 140: -94.0}
_KVP_IODINE = {80: 1.6, 100: 1.3, 120: 1.0, 140: 0.85}
#: Contrast enhancement of the parenchymal organs (HU) by phase; muscle takes a fifth of it.
_ORGAN_BOOST = {"native": 0.0, "arterial": 20.0, "portal": 50.0}
_MUSCLE_HU = 50.0
_MUSCLE_CONTRAST_SHARE = 0.2
#: Patient-to-patient SD (HU) of the true CT number of subcutaneous fat and of muscle.
FAT_SD = 6.0
MUSCLE_SD = 5.0


def fat_hu(scan: ScanParams) -> float:
    """Mean true CT number of subcutaneous fat on this scan (before the scanner's scale error)."""
    return _energy_curve(_KVP_FAT, effective_kvp(scan))


def muscle_hu(scan: ScanParams) -> float:
    """Mean true CT number of skeletal muscle on this scan (before the scanner's scale error)."""
    return _MUSCLE_HU + _MUSCLE_CONTRAST_SHARE * _ORGAN_BOOST[scan.contrast_phase]


def bone_hu(bmd: float | np.ndarray, scan: ScanParams, trunk_mm: float) -> float | np.ndarray:
    """True trabecular CT number (before the scanner's scale error) of a mineral density."""
    hu = np.asarray(bmd) / scan.calib_slope * bone_factor(scan)
    hu = hu * (1.0 - scan.beam_hardening * max(trunk_mm - 300.0, 0.0) / 100.0)
    boost = {"native": 0.0, "arterial": 8.0, "portal": 16.0}[scan.contrast_phase]
    return hu + boost + 5.0  # marrow soft tissue adds a few HU at zero mineral


def render_ct(
    tissue: np.ndarray,
    levels_map: np.ndarray,
    bmd_by_id: dict[int, float],
    scan: ScanParams,
    spacing: tuple[float, float, float],
    sub: int,
    trunk_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Turn a tissue map into HU on the output grid.

    Args:
        tissue: tissue map on the fine grid (z finer than the slices by ``sub``).
        levels_map: vertebral body ids on the same grid (for per-level BMD).
        bmd_by_id: trabecular BMD (mg/cm3) per VerSe id.
        scan: scanner parameters.
        spacing: spacing of the fine grid (mm).
        sub: fine slices per output slice (slice profile = their mean).
        trunk_mm: trunk size (left-right + antero-posterior semi-axes) for beam hardening.
        rng: randomness.

    Returns:
        float32 HU volume with ``tissue.shape[2] // sub`` slices.
    """
    iod = _energy_curve(_KVP_IODINE, effective_kvp(scan))
    # Every bone-like material follows the same energy dependence as trabecular bone.
    bf = bone_factor(scan)
    blood = {"native": 40.0, "arterial": 280.0 * iod, "portal": 150.0 * iod}[scan.contrast_phase]
    organ_boost = _ORGAN_BOOST[scan.contrast_phase]
    bh = (1.0 - scan.beam_hardening * max(trunk_mm - 300.0, 0.0) / 100.0) * bf
    lut = np.zeros(max(Tissue) + 1, dtype=np.float32)
    jit = rng.normal(0.0, 1.0, size=lut.shape)
    lut[Tissue.AIR] = -1000.0
    lut[Tissue.FAT] = fat_hu(scan) + FAT_SD * jit[1]
    lut[Tissue.VISCERAL_FAT] = lut[Tissue.FAT] + 8.0 + 5 * jit[18]
    lut[Tissue.MUSCLE] = _MUSCLE_HU + MUSCLE_SD * jit[2] + _MUSCLE_CONTRAST_SHARE * organ_boost
    lut[Tissue.SOFT] = 35.0 + 8 * jit[3] + 0.5 * organ_boost
    lut[Tissue.LIVER] = 58.0 + 6 * jit[4] + organ_boost
    lut[Tissue.SPLEEN] = 48.0 + 5 * jit[19] + organ_boost * 1.2
    lut[Tissue.KIDNEY] = 32.0 + 5 * jit[5] + organ_boost * 2.5
    lut[Tissue.LUNG] = -860.0 + 30 * jit[6]
    lut[Tissue.BLOOD] = blood + 10 * jit[7]
    lut[Tissue.GAS] = -950.0
    lut[Tissue.CSF] = 12.0 + 4 * jit[9]
    lut[Tissue.DISC] = 80.0 + 10 * jit[10]
    lut[Tissue.POSTERIOR] = (380.0 + 40 * jit[13]) * bh
    lut[Tissue.RIB] = (330.0 + 40 * jit[14]) * bh
    lut[Tissue.PELVIS] = (320.0 + 40 * jit[15]) * bh
    lut[Tissue.ISLAND] = 950.0 * bh
    lut[Tissue.METAL] = 3000.0
    hu = lut[tissue]
    # Bodies: per-level trabecular HU with texture, shell density tied to the bone's mineral.
    trab = tissue == Tissue.TRABECULAR
    cort = tissue == Tissue.CORTEX
    bbox = ndimage.find_objects((trab | cort).astype(np.uint8))
    if bbox and bbox[0] is not None:
        sl = bbox[0]
        sub_levels = levels_map[sl]
        sub_hu = hu[sl]
        sub_t = tissue[sl]
        texture = ndimage.gaussian_filter(rng.standard_normal(sub_hu.shape).astype(np.float32), 0.9)
        texture /= max(float(texture.std()), 1e-6)
        for vid, bmd in bmd_by_id.items():
            m = sub_levels == vid
            if not m.any():
                continue
            t_hu = float(bone_hu(bmd, scan, trunk_mm))
            mt = m & (sub_t == Tissue.TRABECULAR)
            sub_hu[mt] = t_hu + (8.0 + 0.12 * abs(t_hu)) * texture[mt]
            mc = m & (sub_t == Tissue.CORTEX)
            sub_hu[mc] = (300.0 + 2.2 * bmd) * bh + 25.0 * texture[mc]
        hu[sl] = sub_hu
    # Metal streaks: alternating bright and dark rays in the slices holding metal.
    metal_slices = np.where((tissue == Tissue.METAL).any(axis=(0, 1)))[0]
    for k in metal_slices:
        ii, jj = np.where(tissue[:, :, k] == Tissue.METAL)
        ci, cj = ii.mean(), jj.mean()
        gi, gj = np.meshgrid(np.arange(hu.shape[0]) - ci, np.arange(hu.shape[1]) - cj, indexing="ij")
        ang = np.arctan2(gj, gi)
        r = np.hypot(gi * spacing[0], gj * spacing[1])
        hu[:, :, k] += (250.0 * np.sin(12 * ang) * np.exp(-r / 60.0)).astype(np.float32)
    # Reconstruction kernel blur in-plane; slice profile along z (mean over fine slices).
    sig = (scan.blur_mm / spacing[0], scan.blur_mm / spacing[1], 0.0)
    for a in (0, 1):
        ndimage.gaussian_filter1d(hu, sig[a], axis=a, output=hu, truncate=3.0)
    if sub > 1:
        nz = hu.shape[2] // sub
        hu = hu[:, :, : nz * sub].reshape(hu.shape[0], hu.shape[1], nz, sub).mean(axis=3)
    # Quantum noise, spatially correlated by the kernel (sharper kernel: finer grain).
    grain = {"soft": 1.0, "standard": 0.75, "sharp": 0.5}[scan.kernel] / spacing[0]
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    ndimage.gaussian_filter(noise, (grain, grain, 0.0), output=noise, truncate=2.5)
    noise *= scan.noise_hu / max(float(noise[::4, ::4, ::4].std()), 1e-6)
    # More noise through a larger body (photon starvation), less outside it.
    inside = tissue[:, :, sub // 2 :: sub][:, :, : hu.shape[2]] != Tissue.AIR
    hu += noise * np.where(inside, 1.0, 0.3).astype(np.float32)
    hu = hu * scan.gain + scan.offset
    return np.asarray(np.clip(hu, -1024.0, 3071.0), dtype=np.float32)
