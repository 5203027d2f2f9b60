"""The calibration floor: exact inversion, the cost of each hidden term, cohort and CLI use."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace

import pytest

from osteoscreen.cli import main
from osteoscreen.evaluation.floor import (
    HIDDEN_TERMS,
    calibration_floor,
    floor_error,
    profile_floor,
    read_specs,
)
from osteoscreen.synth.cohort import REFERENCE_CALIB_SLOPE, sample_case
from osteoscreen.synth.physics import bone_hu


@pytest.mark.parametrize("profile", ["train", "independent"])
def test_reader_that_knows_every_term_is_exact(profile: str) -> None:
    for i in range(20):
        spec = sample_case(f"c{i}", 1000 + i, profile)
        assert floor_error(spec, 120.0, HIDDEN_TERMS) == pytest.approx(0.0, abs=1e-9)


def test_gain_error_scales_the_reading() -> None:
    spec = sample_case("c", 5, "train")
    ref_scan = replace(
        spec.scan,
        calib_slope=REFERENCE_CALIB_SLOPE,
        gain=1.0,
        offset=0.0,
        energy_shift=0.0,
        beam_hardening=0.03,
    )
    spec = replace(spec, scan=replace(ref_scan, gain=1.1))
    trunk = spec.body_a + spec.body_b
    b = float(bone_hu(0.0, ref_scan, trunk))
    a = float(bone_hu(1.0, ref_scan, trunk)) - b
    # hu = 1.1 (a bmd + b): the reader reads 10 % too much of (bmd + b / a).
    assert floor_error(spec, 150.0) == pytest.approx(0.1 * (150.0 + b / a), rel=1e-9)
    # An offset of +8 HU reads 8 / a mg/cm3 high.
    spec = replace(spec, scan=replace(ref_scan, offset=8.0))
    assert floor_error(spec, 150.0) == pytest.approx(8.0 / a, rel=1e-9)


def test_independent_profile_is_harder_and_knowing_terms_helps() -> None:
    test = profile_floor("test", 300)
    ind = profile_floor("independent", 300)
    assert ind["mae"] > 2 * test["mae"]
    known = profile_floor("independent", 300, known=("gain", "offset", "energy_shift"))
    assert known["mae"] < ind["mae"] / 2
    with pytest.raises(ValueError, match="unknown calibration term"):
        profile_floor("test", 3, known=("kvp",))
    with pytest.raises(ValueError, match="n must be"):
        profile_floor("test", 0)


def _fake_cohort(tmp_path, n=5):
    specs = [sample_case(f"independent-9-{i:04d}", 77 + i, "independent") for i in range(n)]
    (tmp_path / "synth_params.json").write_text(json.dumps({"specs": [asdict(s) for s in specs]}))
    rows = [{"case_id": s.case_id, "patient_bmd": f"{s.patient_bmd_target:.1f}"} for s in specs]
    rows.append({"case_id": "hospital-1", "patient_bmd": "100.0"})  # not generated: skipped
    rows.append({"case_id": specs[0].case_id, "patient_bmd": ""})  # no patient value: skipped
    with open(tmp_path / "cohort.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "patient_bmd"])
        w.writeheader()
        w.writerows(rows)
    return specs, rows


def test_cohort_floor_uses_the_saved_specs(tmp_path) -> None:
    specs, rows = _fake_cohort(tmp_path)
    back = read_specs(tmp_path / "synth_params.json")
    assert back[specs[2].case_id] == specs[2]
    m = calibration_floor(rows, tmp_path / "synth_params.json")
    assert m is not None and m["n"] == len(specs)
    expected = [abs(floor_error(s, float(f"{s.patient_bmd_target:.1f}"))) for s in specs]
    assert m["mae"] == pytest.approx(sum(expected) / len(expected))
    assert calibration_floor(rows, tmp_path / "absent.json") is None


def test_floor_command(tmp_path, capsys) -> None:
    _fake_cohort(tmp_path)
    assert main(["floor", "--cohort", str(tmp_path / "cohort.csv")]) == 0
    out = capsys.readouterr().out
    assert "reference scanner assumed" in out and "knows all" in out
    assert main(["floor", "--profile", "test", "--n", "10"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "cohort.csv").write_text("case_id,image\n")
    assert main(["floor", "--cohort", str(tmp_path / "other" / "cohort.csv")]) == 2
    assert "not a cohort written by" in capsys.readouterr().err
