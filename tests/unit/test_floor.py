"""The calibration floor: exact inversion, the cost of each hidden term, cohort and CLI use."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from osteoscreen.cli import main
from osteoscreen.evaluation.floor import (
    HIDDEN_TERMS,
    REFERENCE_TRUST_SD,
    SCALE_PRIOR_SD,
    calibration_floor,
    floor_error,
    profile_floor,
    read_specs,
)
from osteoscreen.synth.cohort import REFERENCE_CALIB_SLOPE, sample_case
from osteoscreen.synth.physics import MUSCLE_SD, bone_hu
from osteoscreen.training import densenet as training


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


def test_references_calibrate_the_scale_they_share_with_bone() -> None:
    spec = sample_case("c", 11, "train")
    exact = replace(
        spec.scan, calib_slope=REFERENCE_CALIB_SLOPE, energy_shift=0.0, beam_hardening=0.03, gain=1.0
    )
    # A pure HU offset: the reader without references reads it all as mineral; with the
    # muscle reference it recovers most of it (muscle's own deviation is drawn per case).
    spec = replace(spec, scan=replace(exact, offset=15.0))
    blind = floor_error(spec, 100.0)
    errs = [
        floor_error(spec, 100.0, references=("muscle",), rng=np.random.default_rng(k)) for k in range(400)
    ]
    assert abs(float(np.mean(errs))) < 0.5 * abs(blind)
    # The same case always draws the same patient references; a known term stays known.
    assert floor_error(spec, 100.0, references=("fat", "muscle")) == floor_error(
        spec, 100.0, references=("fat", "muscle")
    )
    both = floor_error(spec, 100.0, known=("gain", "offset"), references=("muscle",))
    assert both == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="unknown reference"):
        floor_error(spec, 100.0, references=("air",))


def test_reference_reader_trusts_what_the_networks_are_trained_with() -> None:
    assert SCALE_PRIOR_SD == (training.SCALE_ERROR_GAIN_SD, training.SCALE_ERROR_OFFSET_SD)
    trained = float(np.hypot(MUSCLE_SD, training.MUSCLE_JITTER_SD))
    assert REFERENCE_TRUST_SD["muscle"] == pytest.approx(trained, abs=0.05)


def test_muscle_reference_lowers_the_independent_floor() -> None:
    blind = profile_floor("independent", 400)
    muscle = profile_floor("independent", 400, references=("muscle",))
    assert muscle["mae"] < blind["mae"] - 1.0


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
    with_refs = calibration_floor(rows, tmp_path / "synth_params.json", references=("fat", "muscle"))
    assert with_refs is not None and with_refs["references"] == ["fat", "muscle"]


def test_floor_command(tmp_path, capsys) -> None:
    _fake_cohort(tmp_path)
    assert main(["floor", "--cohort", str(tmp_path / "cohort.csv")]) == 0
    out = capsys.readouterr().out
    assert "reference scanner assumed" in out and "knows all" in out
    assert "fat and muscle references" in out
    assert main(["floor", "--profile", "test", "--n", "10"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "cohort.csv").write_text("case_id,image\n")
    assert main(["floor", "--cohort", str(tmp_path / "other" / "cohort.csv")]) == 2
    assert "not a cohort written by" in capsys.readouterr().err


def test_floor_output_to_a_closed_pipe_stops_quietly(monkeypatch, capsys) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["floor", "--profile", "test", "--n", "5"]) == 141
    assert "internal error" not in capsys.readouterr().err
