from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from osteoscreen.config import DEFAULT_CONFIG
from osteoscreen.labels import SegClass, name_to_id
from osteoscreen.roi.trabecular import trabecular_roi
from osteoscreen.synth.cohort import CLASS_MIX, generate_case, sample_case
from osteoscreen.synth.physics import bone_factor, bone_hu, effective_kvp


def test_class_mix_near_the_study() -> None:
    cats = Counter()
    for i in range(3000):
        s = sample_case(f"c{i}", i, "train")
        cats[DEFAULT_CONFIG.thresholds.categorize(s.patient_bmd_target)] += 1
    for cat, share in CLASS_MIX.items():
        assert cats[cat] / 3000 == pytest.approx(share, abs=0.04)


def test_independent_profile_shifts_the_scanner() -> None:
    train = [sample_case(f"a{i}", i, "train").scan for i in range(300)]
    ind = [sample_case(f"b{i}", i, "independent").scan for i in range(300)]
    assert len({s.scanner for s in train}) == 1
    assert len({s.scanner for s in ind}) >= 3
    # Other vendors: another effective energy (filtration); the home scanner has none.
    assert {s.energy_shift for s in train} == {0.0}
    assert np.std([s.energy_shift for s in ind]) > 4.0
    assert np.std([s.calib_slope for s in ind]) > np.std([s.calib_slope for s in train])
    assert np.std([s.offset for s in ind]) > 2 * np.std([s.offset for s in train])


def test_effective_energy_moves_bone_and_fat_together() -> None:
    base = sample_case("e", 5, "train").scan
    low = replace(base, kvp=100, energy_shift=-10.0)
    mid = replace(base, kvp=120, energy_shift=0.0)
    high = replace(base, kvp=120, energy_shift=15.0)
    assert effective_kvp(low) == 90.0
    # Lower energy: bone brighter; between the table's kVp values the curve is continuous.
    assert bone_factor(low) > bone_factor(mid) > bone_factor(high)
    assert bone_factor(mid) > bone_factor(replace(base, kvp=130, energy_shift=0.0)) > bone_factor(high)
    assert float(bone_hu(100.0, low, 300.0)) > float(bone_hu(100.0, mid, 300.0))


@pytest.fixture(scope="module")
def small_case():  # type: ignore[no-untyped-def]
    spec = sample_case("t", 3, "train")
    spec = replace(spec, spacing_xy=1.5, slice_spacing=3.0, protocol="abdomen")
    return generate_case(spec)


def test_case_has_labels_and_truth(small_case) -> None:  # type: ignore[no-untyped-def]
    c = small_case
    assert c.volume.array.shape == c.bodies.shape == c.classes.shape
    assert {"L1", "L2", "L3"} <= set(c.levels_in_view)
    for name in c.levels_in_view:
        assert (c.bodies == name_to_id(name)).any()
    # Every class the segmenter learns is there: bodies, discs, posterior elements, sacrum.
    present = set(np.unique(c.classes).tolist())
    assert {SegClass.BODY, SegClass.DISC, SegClass.POSTERIOR, SegClass.SACRUM} <= present
    assert c.patient_bmd is not None and c.category == DEFAULT_CONFIG.thresholds.categorize(c.patient_bmd)


def test_trabecular_hu_follows_bmd(small_case) -> None:  # type: ignore[no-untyped-def]
    c = small_case
    spec = c.spec
    for name in ("L1", "L2", "L3"):
        if name in c.excluded:
            continue
        body = c.bodies == name_to_id(name)
        roi = trabecular_roi(body, c.volume.spacing, 3.0)
        measured = float(c.volume.array[roi].mean())
        expected = (
            float(bone_hu(c.bmd[name], spec.scan, spec.body_a + spec.body_b)) * spec.scan.gain
            + spec.scan.offset
        )
        # Noise and blur of the neighbours leave a few HU; texture averages out.
        assert measured == pytest.approx(expected, abs=12)


def _coarse(spec, protocol):  # type: ignore[no-untyped-def]
    return replace(
        spec, spacing_xy=2.0, slice_spacing=5.0, protocol=protocol, write_dicom=False, max_z_mm=360.0
    )


def test_chest_scans_start_in_the_neck() -> None:
    specs = [_coarse(sample_case(f"n{i}", i, "test"), "chest") for i in range(11, 16)]
    cases = [generate_case(spec) for spec in specs]
    # The top slice lies 10-50 mm above T1: C7 is in view unless the slice grid just misses it.
    assert sum("C7" in c.levels_in_view for c in cases) >= 4
    v3 = next(c for c in cases if "C7" in c.levels_in_view)
    assert v3.levels_in_view.index("C7") < v3.levels_in_view.index("T1")
    v2 = generate_case(replace(v3.spec, generator_version=2))
    assert not any(name.startswith("C") for name in v2.levels_in_view)
    # C7 bears no ribs: no rib voxel lies above T1's upper endplate.
    t1_top = int(np.nonzero((v3.bodies == name_to_id("T1")).any(axis=(0, 1)))[0].max())
    assert not (v3.classes[:, :, t1_top + 1 :] == SegClass.RIB).any()
    # The base of the neck: no lung in the top slice, and the trachea's air inside the body.
    top = v3.volume.array[:, :, -1]
    body = top > -500
    inside = ndimage.binary_fill_holes(body) & ~body
    assert inside.sum() * 4.0 > 100.0  # mm2: the trachea (and no lung beside it)
    assert inside.sum() * 4.0 < 400.0


def test_the_neck_leaves_other_scans_as_they_were() -> None:
    # The neck has a random stream of its own: a scan below T1 is the same in versions 2 and 3.
    spec = _coarse(sample_case("a", 12, "test"), "abdomen")
    v3, v2 = generate_case(spec), generate_case(replace(spec, generator_version=2))
    assert np.array_equal(v3.volume.array, v2.volume.array)
    assert np.array_equal(v3.bodies, v2.bodies)
