"""The calibration floor of a synthetic profile: what no CT-number reader gets below.

A synthetic scan turns BMD into a trabecular CT number through its scanner: a bone
calibration slope, the effective energy (kVp plus the vendor's filtration shift), beam
hardening with body size, the contrast phase, and the scanner's HU gain and offset
(``synth.physics``). The header and the image show the kVp, the contrast phase and the body
size. They do not show the bone slope, the gain and offset, the vendor's energy shift or the
beam-hardening coefficient: a reader has to assume the reference scanner's values for them,
or estimate them from internal references (fat, air, muscle, blood).

The floor is the error of a reader that measures each vertebra's CT number exactly (no
noise, no partial volume, perfect ROI) and assumes the reference scanner for the hidden
terms. A model's MAE above the floor is what it loses to noise, ROI and levels; a model below
it must have read the scanner's calibration from the image. ``known`` gives the reader the
true value of some hidden terms, to show what each one costs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..synth.cohort import REFERENCE_CALIB_SLOPE, CaseSpec, sample_case
from ..synth.physics import ScanParams, bone_hu

__all__ = ["HIDDEN_TERMS", "calibration_floor", "floor_error", "profile_floor", "read_specs"]

#: The scan terms that neither the header nor a body-size measurement gives away.
HIDDEN_TERMS = ("calib_slope", "gain", "offset", "energy_shift", "beam_hardening")
#: The beam-hardening coefficient a reader assumes: the middle of the train profile's range.
ASSUMED_BEAM_HARDENING = 0.03


def _reference_scan(scan: ScanParams, known: Iterable[str]) -> ScanParams:
    assumed = replace(
        scan,
        calib_slope=REFERENCE_CALIB_SLOPE,
        gain=1.0,
        offset=0.0,
        energy_shift=0.0,
        beam_hardening=ASSUMED_BEAM_HARDENING,
    )
    for term in known:
        if term not in HIDDEN_TERMS:
            raise ValueError(f"unknown calibration term {term!r}; one of {HIDDEN_TERMS}")
        assumed = replace(assumed, **{term: getattr(scan, term)})
    return assumed


def floor_error(spec: CaseSpec, bmd: float, known: Iterable[str] = ()) -> float:
    """The reader's BMD minus the truth for one scan of ``spec`` at density ``bmd`` (mg/cm3)."""
    scan = spec.scan
    trunk = spec.body_a + spec.body_b
    hu = float(bone_hu(bmd, scan, trunk)) * scan.gain + scan.offset
    ref = _reference_scan(scan, known)
    # The reader inverts its own (affine) line: hu = gain * (a * bmd + b) + offset.
    b = float(bone_hu(0.0, ref, trunk))
    a = float(bone_hu(1.0, ref, trunk)) - b
    return ((hu - ref.offset) / ref.gain - b) / a - bmd


def _summary(errors: Sequence[float]) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    return {
        "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt((e**2).mean())),
        "bias": float(e.mean()),
        "n": int(e.size),
    }


def profile_floor(
    profile: str, n: int = 2000, seed: int = 900_001, known: Iterable[str] = ()
) -> dict[str, float]:
    """The floor over ``n`` scans drawn from a profile (no images are made: seconds)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    known = tuple(known)
    errs = []
    for i in range(n):
        spec = sample_case(f"floor-{i}", seed * 100_003 + i, profile)
        errs.append(floor_error(spec, spec.patient_bmd_target, known))
    return _summary(errs)


def read_specs(params_json: Path) -> dict[str, CaseSpec]:
    """The case specs that ``osteoscreen synth`` saved in synth_params.json, by case id."""
    data = json.loads(Path(params_json).read_text())
    specs = {}
    for d in data["specs"]:
        d = dict(d)
        d["scan"] = ScanParams(**d["scan"])
        specs[d["case_id"]] = CaseSpec(**d)
    return specs


def calibration_floor(
    cohort_rows: Iterable[dict[str, str]], params_json: Path, known: Iterable[str] = ()
) -> dict[str, Any] | None:
    """The floor on the patients of a generated cohort (its cohort.csv rows), or None.

    None where ``params_json`` is absent (a hospital's cohort) or lists none of the cases.
    The reader errs by the same affine map on every level of a scan, so its patient value
    errs by that map applied to the patient's reference BMD.
    """
    if not Path(params_json).exists():
        return None
    specs = read_specs(params_json)
    known = tuple(known)
    errs = []
    for row in cohort_rows:
        spec = specs.get(row.get("case_id", ""))
        truth = row.get("patient_bmd", "")
        if spec is None or not truth:
            continue
        errs.append(floor_error(spec, float(truth), known))
    if not errs:
        return None
    return {**_summary(errs), "hidden_terms": list(HIDDEN_TERMS), "known": list(known)}
