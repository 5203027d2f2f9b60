from __future__ import annotations

import numpy as np
import pytest
import torch

from osteoscreen.io.volume import Volume
from osteoscreen.roi.trabecular import erosion_steps, roi_extent, trabecular_roi
from osteoscreen.transforms import (
    CONTEXT_CHANNELS_V2,
    CropSpec,
    ScanContext,
    context_channels,
    extract_crop,
    muscle_reference,
    normalize_hu,
    resample,
    rotation_matrix,
    scan_context,
)


def test_erosion_steps_in_mm() -> None:
    assert erosion_steps((3.0, 3.0, 3.0), 3.0) == (1, 1, 1)
    assert erosion_steps((1.0, 1.0, 1.0), 3.0) == (3, 3, 3)
    assert erosion_steps((0.7, 0.7, 2.5), 3.0) == (5, 5, 2)
    with pytest.raises(ValueError, match="depth_mm"):
        erosion_steps((1, 1, 1), 0)


def test_trabecular_roi_of_a_box_is_anisotropic() -> None:
    body = np.zeros((30, 30, 12), dtype=bool)
    body[5:25, 5:25, 2:10] = True  # 20 x 20 x 8 voxels
    roi = trabecular_roi(body, (1.0, 1.0, 2.0), 3.0)
    # 3 voxels off each side in x / y, 2 voxels (4 mm >= 3 mm) in z.
    assert roi.sum() == 14 * 14 * 4
    assert roi[8:22, 8:22, 4:8].all()


def test_roi_is_a_cross_not_a_box_erosion() -> None:
    """Six directions along the axes: a voxel near a corner stays if each axis line is inside."""
    body = np.zeros((9, 9, 9), dtype=bool)
    body[1:8, 1:8, 1:8] = True
    body[1, 1, 1] = False  # a missing corner removes no axis neighbour of the centre region
    roi = trabecular_roi(body, (1.0, 1.0, 1.0), 1.0)
    assert roi.sum() == 5 * 5 * 5


def test_roi_extent() -> None:
    roi = np.zeros((10, 10, 10), dtype=bool)
    roi[2:6, 3:5, 4:5] = True
    aff = np.diag([2.0, 1.0, 3.0, 1.0])
    aff[:3, 3] = (10, 20, 30)
    centre, size = roi_extent(roi, aff)
    assert centre == pytest.approx((10 + 3.5 * 2, 20 + 3.5, 30 + 4 * 3))
    assert size == pytest.approx((8.0, 2.0, 3.0))


def test_resample_shape_and_mean() -> None:
    arr = np.random.default_rng(0).normal(100, 10, size=(60, 50, 40)).astype(np.float32)
    out = resample(arr, (0.5, 0.5, 1.0), (2.0, 2.0, 2.0))
    assert tuple(out.shape) == (1, 1, 15, 12, 20)
    assert float(out.mean()) == pytest.approx(100, abs=1)
    assert float(normalize_hu(torch.tensor([-5000.0, 1000.0]))[0]) == -1.0


def _ball_volume(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    # A ball of 300 HU at (5, -3, 8) mm plus a gradient along x, in water.
    d = np.linalg.norm(xyz - np.array([5.0, -3.0, 8.0]), axis=-1)
    return np.where(d < 10, 300.0, 0.0) + xyz[..., 0]


def test_crop_is_orientation_independent() -> None:
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    ras[:3, 3] = (-30, -30, -30)
    vol = Volume(_ball_volume(ras, (60, 60, 30)).astype(np.float32), ras)
    # The same voxels stored LPS + slices reversed (as DICOM would give them).
    arr = vol.array[::-1, ::-1, ::-1].copy()
    flip = np.diag([-1.0, -1.0, -1.0, 1.0])
    flip[:3, 3] = np.array(vol.shape) - 1
    lps_aff = ras @ flip
    other = Volume(arr, lps_aff)
    spec = CropSpec(crop_size=(16, 16, 8), spacing=(1.5, 1.5, 1.5))
    a = extract_crop(vol.array, vol.affine, (5.0, -3.0, 8.0), spec)
    b = extract_crop(other.array, other.affine, (5.0, -3.0, 8.0), spec)
    assert a.shape == (1, 16, 16, 8)
    assert torch.allclose(a, b, atol=1e-4)
    # Centre of the ball: 300 HU + x (5 mm) normalised.
    centre = float(a[0, 7:9, 7:9, 3:5].mean())
    assert centre == pytest.approx((305 - spec.norm_center) / spec.norm_scale, abs=0.02)


def test_crop_rotation_and_outside_reads_air() -> None:
    aff = np.eye(4)
    vol = np.full((20, 20, 20), 50.0, dtype=np.float32)
    spec = CropSpec(crop_size=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    far = extract_crop(vol, aff, (500.0, 500.0, 500.0), spec)
    assert float(far.max()) == pytest.approx((spec.clip[0] - spec.norm_center) / spec.norm_scale)
    rot = extract_crop(vol, aff, (10.0, 10.0, 10.0), spec, rotation=rotation_matrix((10, 0, 5)))
    assert float(rot.mean()) == pytest.approx((50 - spec.norm_center) / spec.norm_scale, abs=1e-4)


def test_canonical_round_trip() -> None:
    aff = np.array([[0, 0, -2.0, 10], [-1.0, 0, 0, 5], [0, -1.5, 0, 7], [0, 0, 0, 1]])
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    view = Volume(arr, aff).canonical()
    c = view.volume
    # Canonical is RAS: a diagonal-positive affine, and the same world position per voxel value.
    assert np.all(np.diag(c.affine)[:3] > 0)
    idx = np.argwhere(c.array == 17.0)[0]
    src = np.argwhere(arr == 17.0)[0]
    assert np.allclose(c.affine[:3, :3] @ idx + c.affine[:3, 3], aff[:3, :3] @ src + aff[:3, 3])
    assert np.array_equal(view.to_original(c.array), arr)


def _phantom(fat: float, soft: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Air around a fat ring around soft tissue, with a bone core, and noise."""
    x, y = np.meshgrid(np.arange(120) - 60, np.arange(120) - 60, indexing="ij")
    r = np.hypot(x, y)
    sl = np.full((120, 120), -1000.0)
    sl[r < 55] = fat
    sl[r < 40] = soft
    sl[r < 8] = 250.0
    vol = np.repeat(sl[:, :, None], 30, axis=2).astype(np.float32)
    return vol + rng.normal(0.0, noise, vol.shape).astype(np.float32)


@pytest.mark.parametrize("noise", [5.0, 90.0])
def test_scan_context_finds_the_internal_references(noise: float) -> None:
    rng = np.random.default_rng(0)
    ctx = scan_context(_phantom(-100.0, 50.0, noise, rng), 100)
    assert ctx.kvp == 100.0 and ctx.kvp_known and ctx.fat_usable
    assert ctx.fat_hu == pytest.approx(-100.0, abs=6.0)
    assert ctx.soft_hu == pytest.approx(50.0, abs=6.0)
    # A scanner whose HU scale is off moves the references with it.
    off = scan_context(_phantom(-100.0, 50.0, noise, rng) * 1.05 + 15.0, None)
    assert off.fat_hu == pytest.approx(-100.0 * 1.05 + 15.0, abs=6.0)
    assert off.soft_hu == pytest.approx(50.0 * 1.05 + 15.0, abs=6.0)
    assert not off.kvp_known and off.kvp == 120.0


def test_scan_context_without_fat_says_so() -> None:
    # Soft tissue only (a tight field of view around the spine): no fat reference.
    vol = np.full((40, 40, 10), 40.0, dtype=np.float32)
    ctx = scan_context(vol, 250)  # not a CT tube voltage: treated as unknown
    assert ctx.fat_hu is None and not ctx.fat_usable and not ctx.kvp_known
    assert ctx.vector() == [0.0, 0.0, 0.0]
    # Some fat-like voxels, but their peak is at the window's edge: not adipose tissue.
    edge = ScanContext(kvp=120.0, fat_hu=-45.0, kvp_known=True)
    assert not edge.fat_usable and edge.vector()[2] == 0.0


def test_context_channels_are_constant_planes() -> None:
    crops = torch.zeros(3, 1, 8, 8, 4)
    ctx = ScanContext(kvp=80.0, fat_hu=-120.0, soft_hu=45.0, kvp_known=True)
    x = context_channels(crops, ctx)
    assert x.shape == (3, 4, 8, 8, 4)
    assert torch.all(x[:, 1] == -2.0) and torch.all(x[:, 2] == -1.0) and torch.all(x[:, 3] == 1.0)
    assert context_channels(crops[0], ctx).shape == (4, 8, 8, 4)
    shifted = ctx.with_scale_error(1.1, 10.0)
    assert shifted.fat_hu == pytest.approx(-122.0) and shifted.kvp == 80.0
    assert ctx.without_fat().vector() == [-2.0, 0.0, 0.0]


def _back(muscle: float, noise: float, rng: np.random.Generator, cut_mm: float | None = None) -> np.ndarray:
    """An axial-slab body at 1 mm (RAS): fat, a vertebral body at the centre, paraspinal
    muscles behind it either side of a spinous process whose marrow is as dark as fat-free
    soft tissue (60 HU), and air beyond ``cut_mm`` behind the centre where given."""
    x, y = np.meshgrid(np.arange(160) - 80.0, np.arange(160) - 80.0, indexing="ij")
    sl = np.full((160, 160), -1000.0)
    sl[x**2 / 75**2 + y**2 / 78**2 < 1] = -100.0
    sl[(np.abs(x) >= 8) & (np.abs(x) <= 48) & (y <= -22) & (y >= -75)] = muscle
    sl[(np.abs(x) < 6) & (y < -20) & (y > -70)] = 60.0  # spinous process marrow
    sl[(np.abs(x) < 6) & (y < -20) & (y > -70) & (np.abs(x) > 4)] = 700.0  # its cortex
    sl[x**2 + y**2 < 15**2] = 150.0  # the vertebral body
    if cut_mm is not None:
        sl[:, y[0] < -cut_mm] = -1000.0
    vol = np.repeat(sl[:, :, None], 40, axis=2).astype(np.float32)
    return vol + rng.normal(0.0, noise, vol.shape).astype(np.float32)


@pytest.mark.parametrize("noise", [5.0, 90.0])
def test_muscle_reference_reads_the_paraspinal_muscles(noise: float) -> None:
    rng = np.random.default_rng(1)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-80.0, -80.0, 0.0]
    centres = [(0.0, 0.0, 12.0), (0.0, 0.0, 28.0)]
    assert muscle_reference(_back(45.0, noise, rng), affine, centres) == pytest.approx(45.0, abs=6.0)
    # The scanner's HU-scale error moves it as it moves the bone.
    off = _back(45.0, noise, rng) * 0.95 - 12.0
    assert muscle_reference(off, affine, centres) == pytest.approx(45.0 * 0.95 - 12.0, abs=6.0)
    # Fatty muscle of the elderly is still found, and still usable.
    fatty = muscle_reference(_back(22.0, noise, rng), affine, centres)
    assert fatty == pytest.approx(22.0, abs=6.0)
    assert ScanContext(muscle_hu=fatty).muscle_usable


def test_muscle_reference_absent_when_the_field_of_view_ends_behind_the_spine() -> None:
    rng = np.random.default_rng(2)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-80.0, -80.0, 0.0]
    vol = _back(45.0, 5.0, rng, cut_mm=28.0)
    assert muscle_reference(vol, affine, [(0.0, 0.0, 20.0)]) is None
    assert muscle_reference(vol, affine, []) is None
    ctx = ScanContext(kvp=120.0, fat_hu=-100.0, kvp_known=True, muscle_hu=None)
    assert ctx.vector(CONTEXT_CHANNELS_V2) == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_context_vector_follows_the_bundles_channel_names() -> None:
    ctx = ScanContext(kvp=100.0, fat_hu=-110.0, kvp_known=True, muscle_hu=70.0)
    assert ctx.vector() == [-1.0, -0.5, 1.0]  # the first bundles' three channels
    assert ctx.vector(CONTEXT_CHANNELS_V2) == [-1.0, -0.5, 1.0, 1.0, 1.0]
    assert ctx.vector(["muscle_reference_used", "kvp"]) == [1.0, -1.0]
    assert ctx.with_scale_error(1.0, 10.0).muscle_hu == pytest.approx(80.0)
    assert not ScanContext(muscle_hu=140.0).muscle_usable  # above any muscle: not used
    assert ctx.without_muscle().vector(CONTEXT_CHANNELS_V2)[3:] == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown context channel"):
        ctx.vector(["bone_hu"])
    x = context_channels(torch.zeros(2, 1, 4, 4, 4), ctx, CONTEXT_CHANNELS_V2)
    assert x.shape == (2, 6, 4, 4, 4) and torch.all(x[:, 4] == 1.0)


def test_muscle_unlike_the_fat_reference_is_not_used() -> None:
    # A scanner error moves both references: still usable.
    assert ScanContext(fat_hu=-100.0, muscle_hu=50.0).with_scale_error(1.05, 15.0).muscle_usable
    # Muscle only 90 HU above fat (fatty muscle, or not muscle at all): not used.
    odd = ScanContext(fat_hu=-70.0, muscle_hu=20.0)
    assert odd.fat_usable and not odd.muscle_usable
    assert odd.vector(CONTEXT_CHANNELS_V2)[3:] == [0.0, 0.0]
    # Without a fat reference the muscle's own plausible range decides.
    assert ScanContext(muscle_hu=20.0).muscle_usable


def test_context_channels_of_a_bundle() -> None:
    from osteoscreen.transforms import context_channels_of

    assert context_channels_of({}) == []  # the VB-Nets, and DenseNets without context
    assert context_channels_of({"context": {"default_kvp": 120.0}}) == ["kvp", "fat_hu", "fat_reference_used"]
    assert context_channels_of({"context": {"channels": list(CONTEXT_CHANNELS_V2)}}) == list(
        CONTEXT_CHANNELS_V2
    )
