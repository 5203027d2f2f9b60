from __future__ import annotations

import numpy as np
import pytest

from osteoscreen.config import DEFAULT_CONFIG
from osteoscreen.labels import name_to_id
from osteoscreen.pipeline import patient_result, protocol_guess
from osteoscreen.results import RoiMeasurement, VertebraResult
from osteoscreen.roi.measure import body_heights, height_ratio, measure_body


def _vert(
    name: str, bmd: float, excluded: bool = False, probs: tuple[float, float, float] = (0.6, 0.3, 0.1)
) -> VertebraResult:
    roi = RoiMeasurement(name_to_id(name), name, 100, 200, 100.0, 100.0, 10.0, (0, 0, 0), (10, 10, 10), 1.0)
    return VertebraResult(
        roi=roi,
        bmd_mg_cm3=bmd,
        category=DEFAULT_CONFIG.thresholds.categorize(bmd),
        probabilities=dict(zip(("normal", "osteopenia", "osteoporosis"), probs)),
        excluded=excluded,
    )


def test_patient_uses_the_protocol_levels_and_leaves_out_excluded() -> None:
    vs = [
        _vert("T12", 150),
        _vert("L1", 130),
        _vert("L2", 90, excluded=True),
        _vert("L3", 110),
        _vert("L4", 10),
    ]
    p, warnings = patient_result(vs, DEFAULT_CONFIG, "abdomen")
    assert p.levels_used == ["L1", "L3"]
    assert p.bmd_mg_cm3 == pytest.approx(120.0)
    assert p.category == "osteopenia"
    assert p.classifier_category == "normal" and p.agreement is False
    assert p.excluded_levels == ["L2"]
    assert not warnings
    p, _ = patient_result(vs, DEFAULT_CONFIG, "chest")
    assert p.levels_used == ["T12", "L1"]


def test_patient_falls_back_and_says_so() -> None:
    vs = [_vert("V1", 50), _vert("V2", 60), _vert("V3", 70), _vert("V4", 80)]
    p, warnings = patient_result(vs, DEFAULT_CONFIG, "abdomen")
    assert p.levels_used == ["V2", "V3", "V4"]
    assert warnings and "could be used" in warnings[0]
    p, warnings = patient_result([_vert("L1", 50, excluded=True)], DEFAULT_CONFIG, "abdomen")
    assert p.bmd_mg_cm3 is None and warnings


def test_protocol_guess() -> None:
    assert protocol_guess({"series_description": "CHEST W/O 1.25mm"}, ["L3"]) == "chest"
    assert protocol_guess({"series_description": "ABD/PELVIS PV"}, []) == "abdomen"
    assert protocol_guess({}, ["T12", "L1", "L2", "L3"]) == "abdomen"
    assert protocol_guess({}, ["T11", "T12", "L1"]) == "chest"


def _box_body(shape: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    body = np.zeros(shape, dtype=bool)
    body[10:30, 10:30, 10:30] = True
    return body


def test_measure_removes_a_bone_island_and_flags_metal() -> None:
    body = _box_body()
    hu = np.full(body.shape, 150.0, dtype=np.float32)
    hu[18:21, 18:21, 18:21] = 900.0  # a bone island
    m, _ = measure_body(hu, body, np.eye(4), (1.0, 1.0, 1.0), 20, DEFAULT_CONFIG)
    assert "bone_island" in m.flags
    assert m.hu_mean > 150.0  # the paper's plain ROI mean keeps the island
    assert m.hu_mean_without_islands == pytest.approx(150.0)
    hu[8:10, 19:22, 19:22] = 3000.0  # a screw tip next to the body
    m, _ = measure_body(hu, body, np.eye(4), (1.0, 1.0, 1.0), 20, DEFAULT_CONFIG)
    assert "metal" in m.flags


def test_height_ratio_sees_a_wedge() -> None:
    body = _box_body()
    assert height_ratio(body, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    wedge = body.copy()
    wedge[:, 24:30, 20:30] = False  # the anterior third (high j in RAS) lost half its height
    assert height_ratio(wedge, (1.0, 1.0, 1.0)) < 0.8
    m, _ = measure_body(
        np.full(body.shape, 100.0, np.float32), wedge, np.eye(4), (1.0, 1.0, 1.0), 20, DEFAULT_CONFIG
    )
    assert "fracture_suspected" in m.flags


def _tilted_body(tilt_deg: float, wedge: float = 0.0) -> np.ndarray:
    """A 30 mm deep, 26 mm tall body (1 mm voxels) tilted forward in the sagittal plane, its
    front losing ``wedge`` of its height (measured square to its own axis)."""
    ii, jj, kk = np.meshgrid(np.arange(30), np.arange(70), np.arange(70), indexing="ij")
    t = np.radians(tilt_deg)
    y, z = jj - 35.0, kk - 35.0
    u = y * np.cos(t) - z * np.sin(t)  # depth along the body
    v = y * np.sin(t) + z * np.cos(t)  # height along the body's axis
    top = 13.0 - wedge * 26.0 * np.clip((u + 5.0) / 10.0, 0.0, 1.0)  # front part lowered
    return (np.abs(ii - 15) <= 12) & (np.abs(u) <= 15.0) & (v >= -13.0) & (v <= top)


def test_heights_are_taken_square_to_the_spine_axis() -> None:
    # A sound body 26 mm tall, tilted by 25 degrees (lumbosacral lordosis): straight up, its
    # front and back columns cut through the tilted endplates' corners.
    sp = (1.0, 1.0, 1.0)
    t = np.radians(25.0)
    axis = (float(np.sin(t)), float(np.cos(t)))
    sound = _tilted_body(25.0)
    assert body_heights(sound, sp)[0] < 0.75 * 26.0
    assert body_heights(sound, sp, axis) == pytest.approx((26.0, 26.0, 26.0), abs=1.5)
    assert height_ratio(sound, sp, axis) == pytest.approx(1.0, abs=0.08)
    # A real wedge fracture, tilted the same way, is still found along the axis.
    assert height_ratio(_tilted_body(25.0, wedge=0.4), sp, axis) < 0.75


def test_measure_vertebrae_on_boxes_equals_the_whole_volume() -> None:
    from osteoscreen.io.volume import Volume
    from osteoscreen.pipeline import Bodies, measure_vertebrae

    rng = np.random.default_rng(3)
    shape = (90, 70, 120)
    labels = np.zeros(shape, dtype=np.int16)
    labels[30:55, 20:45, 10:35] = name_to_id("L2")
    labels[32:57, 22:47, 45:70] = name_to_id("L1")
    labels[35:60, 25:45, 80:100] = 101  # a body of unknown level
    hu = rng.normal(120.0, 30.0, shape).astype(np.float32)
    hu[57:59, 30:33, 50:53] = 3000.0  # metal beside L1
    aff = np.diag([0.8, 0.8, 1.5, 1.0])
    aff[:3, 3] = (-30.0, 12.0, 400.0)
    canon = Volume(hu, aff)
    bodies = Bodies(labels, {101: True}, 0.8, [], [], "given")
    ms, roi_map = measure_vertebrae(canon, bodies, DEFAULT_CONFIG)
    assert [m.label_id for m in ms] == [name_to_id("L1"), name_to_id("L2"), 101]
    for m in ms:
        ref, ref_roi = measure_body(
            hu,
            labels == m.label_id,
            aff,
            canon.spacing,
            m.label_id,
            DEFAULT_CONFIG,
            touches_edge=m.label_id == 101,
        )
        assert m.hu_mean == pytest.approx(ref.hu_mean) and m.roi_voxels == ref.roi_voxels
        assert m.center_mm == pytest.approx(ref.center_mm) and m.flags == ref.flags
        assert np.array_equal(roi_map == m.label_id, ref_roi)
    assert "metal" in ms[0].flags and "partial_in_view" in ms[2].flags


def test_a_crop_centre_outside_the_roi_bone_is_flagged_and_left_out() -> None:
    from osteoscreen.io.volume import Volume
    from osteoscreen.models import load_models
    from osteoscreen.pipeline import classify_vertebrae

    hu = np.full((80, 80, 40), 150.0, dtype=np.float32)  # trabecular bone everywhere ...
    hu[30:50, 30:50, 15:25] = -100.0  # ... but fat where the second centre lies
    canon = Volume(hu, np.eye(4), meta={"kvp": 120.0})

    def roi(name: str, centre: tuple[float, float, float]) -> RoiMeasurement:
        return RoiMeasurement(name_to_id(name), name, 500, 900, 150.0, 150.0, 10.0, centre, (20, 20, 15), 1.0)

    inside, outside = roi("L1", (10.0, 10.0, 8.0)), roi("L2", (40.0, 40.0, 20.0))
    res = classify_vertebrae(canon, [inside, outside], load_models(), DEFAULT_CONFIG, 1.0)
    assert "crop_off_roi" not in res[0].roi.flags and not res[0].excluded
    assert "crop_off_roi" in res[1].roi.flags and res[1].excluded


def test_one_bad_body_does_not_decide_the_patient_value() -> None:
    from dataclasses import replace

    # L1's ROI sits on a bone island: 200 against neighbours of about 100.
    vs = [
        _vert("T11", 104),
        _vert("T12", 102),
        _vert("L1", 200, probs=(0.9, 0.1, 0.0)),
        _vert("L2", 98),
        _vert("L3", 96),
        _vert("L4", 94),
        _vert("L5", 60, excluded=True),
    ]
    pooled = replace(DEFAULT_CONFIG, pool_radius=2)
    p, _ = patient_result(vs, pooled, "abdomen")
    assert p.levels_used == ["L1", "L2", "L3"]
    # Medians: L1 of T11-L3 -> 102, L2 of T12-L4 -> 98, L3 of L1-L4 (L5 excluded) -> 97.
    assert p.bmd_mg_cm3 == pytest.approx((102 + 98 + 97) / 3)
    assert p.levels_pooled == ["T11", "T12", "L1", "L2", "L3", "L4"]
    assert sum(p.probabilities.values()) == pytest.approx(1.0)
    assert p.to_summary()["probabilities"]["normal"] == pytest.approx(p.probabilities["normal"], abs=1e-4)
    # The default, pool_radius 0: each level alone, the plain mean of METHOD.md.
    assert DEFAULT_CONFIG.pool_radius == 0
    plain, _ = patient_result(vs, DEFAULT_CONFIG, "abdomen")
    assert plain.bmd_mg_cm3 == pytest.approx((200 + 98 + 96) / 3)
    assert plain.levels_pooled == ["L1", "L2", "L3"]
    assert plain.classifier_category == "normal"


def test_bodies_without_a_level_are_not_pooled() -> None:
    from dataclasses import replace

    vs = [_vert("V1", 50), _vert("V2", 60), _vert("V3", 70), _vert("V4", 80)]
    p, _ = patient_result(vs, replace(DEFAULT_CONFIG, pool_radius=2), "abdomen")
    assert p.bmd_mg_cm3 == pytest.approx(70.0)
    assert p.levels_pooled == ["V2", "V3", "V4"]
