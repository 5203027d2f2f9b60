from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from osteoscreen.config import DEFAULT_CONFIG
from osteoscreen.labels import SegClass, name_to_id
from osteoscreen.roi.trabecular import trabecular_roi
from osteoscreen.synth.cohort import CLASS_MIX, generate_case, sample_case
from osteoscreen.synth.physics import bone_hu


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
    assert np.std([s.calib_slope for s in ind]) > 3 * np.std([s.calib_slope for s in train])


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
