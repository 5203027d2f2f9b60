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

``references`` gives the reader internal references instead: it measures the CT number of
subcutaneous fat and of muscle (exactly, as it measures bone) and estimates the scanner's
gain and offset from them. Each reference's true CT number varies from patient to patient
and fat's also moves with the unseen energy shift, so the reader weighs them by how far it
can trust them (``REFERENCE_TRUST_SD``) against its prior on the scale error
(``SCALE_PRIOR_SD``): the posterior mean of a Gaussian linear model. That is the floor of the
networks' own design, which get the same references as context channels and the same prior
through training augmentation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..synth.cohort import REFERENCE_CALIB_SLOPE, CaseSpec, sample_case
from ..synth.physics import FAT_SD, MUSCLE_SD, ScanParams, bone_hu, fat_hu, muscle_hu

__all__ = [
    "HIDDEN_TERMS",
    "REFERENCES",
    "REFERENCE_TRUST_SD",
    "SCALE_PRIOR_SD",
    "calibration_floor",
    "floor_error",
    "profile_floor",
    "read_specs",
]

#: The scan terms that neither the header nor a body-size measurement gives away.
HIDDEN_TERMS = ("calib_slope", "gain", "offset", "energy_shift", "beam_hardening")
#: The beam-hardening coefficient a reader assumes: the middle of the train profile's range.
ASSUMED_BEAM_HARDENING = 0.03
#: Internal references a reader may calibrate with.
REFERENCES = ("fat", "muscle")
#: How far (HU SD) the reader trusts each reference's CT number to be the nominal one. Fat:
#: the generator's 6 HU between patients and about 3 HU from the vendor energy shift, which
#: moves fat by 0.4 HU per kVp and is not seen. Muscle: the generator's 5 HU and the 10 HU of
#: noise the networks are trained with (``training.densenet.MUSCLE_JITTER_SD``), because real
#: patients' muscle varies far more than the generator's (fatty infiltration).
REFERENCE_TRUST_SD = {"fat": 7.0, "muscle": 11.2}
#: The reader's prior on the scanner's HU gain and offset: the scale error the networks are
#: trained with (``training.densenet.SCALE_ERROR_GAIN_SD`` and ``SCALE_ERROR_OFFSET_SD``).
SCALE_PRIOR_SD = (0.04, 10.0)


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


def _check_references(references: Iterable[str]) -> tuple[str, ...]:
    refs = tuple(references)
    unknown = [r for r in refs if r not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; one of {REFERENCES}")
    return refs


def _scale_from_references(
    scan: ScanParams, assumed: ScanParams, references: Sequence[str], rng: np.random.Generator
) -> tuple[float, float]:
    """The posterior mean of the scanner's (gain, offset) given the references it measures.

    Each reference of this patient has a true CT number (its nominal one on this scan plus
    the patient's own deviation, drawn from ``rng``) that the scanner maps by its gain and
    offset; the reader expects the nominal value on ``assumed`` (the reference scanner).
    """
    nominal = {"fat": fat_hu, "muscle": muscle_hu}
    spread = {"fat": FAT_SD, "muscle": MUSCLE_SD}
    rows, observed, weights = [], [], []
    for name in references:
        true = nominal[name](scan) + spread[name] * float(rng.standard_normal())
        observed.append(true * scan.gain + scan.offset)
        rows.append([nominal[name](assumed), 1.0])
        weights.append(1.0 / REFERENCE_TRUST_SD[name] ** 2)
    x, y, w = np.asarray(rows), np.asarray(observed), np.asarray(weights)
    prior_precision = np.diag([1.0 / SCALE_PRIOR_SD[0] ** 2, 1.0 / SCALE_PRIOR_SD[1] ** 2])
    prior_mean = np.array([1.0, 0.0])
    precision = prior_precision + x.T @ (w[:, None] * x)
    gain, offset = np.linalg.solve(precision, prior_precision @ prior_mean + x.T @ (w * y))
    return float(gain), float(offset)


def floor_error(
    spec: CaseSpec,
    bmd: float,
    known: Iterable[str] = (),
    references: Iterable[str] = (),
    rng: np.random.Generator | None = None,
) -> float:
    """The reader's BMD minus the truth for one scan of ``spec`` at density ``bmd`` (mg/cm3).

    With ``references`` the reader estimates the gain and offset it does not ``know`` from
    them; ``rng`` draws the patient's own deviation of each reference (default: from the
    case's seed, so that a case always has the same fat and muscle).
    """
    scan = spec.scan
    trunk = spec.body_a + spec.body_b
    hu = float(bone_hu(bmd, scan, trunk)) * scan.gain + scan.offset
    known = tuple(known)
    ref = _reference_scan(scan, known)
    refs = _check_references(references)
    if refs:
        rng = rng if rng is not None else np.random.default_rng(spec.seed)
        gain, offset = _scale_from_references(scan, ref, refs, rng)
        ref = replace(
            ref,
            gain=scan.gain if "gain" in known else gain,
            offset=scan.offset if "offset" in known else offset,
        )
    # The reader inverts its own (affine) line: hu = gain * (a * bmd + b) + offset.
    b = float(bone_hu(0.0, ref, trunk))
    a = float(bone_hu(1.0, ref, trunk)) - b
    return ((hu - ref.offset) / ref.gain - b) / a - bmd


def _summary(errors: Sequence[float], truths: Sequence[float]) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    rel = 100.0 * e / np.maximum(np.asarray(truths, dtype=np.float64), 1.0)
    return {
        "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt((e**2).mean())),
        "bias": float(e.mean()),
        # The error relative to the truth, as cross-scanner calibration studies quote it.
        "relative_bias_pct": float(rel.mean()),
        "relative_sd_pct": float(rel.std()),
        "n": int(e.size),
    }


def profile_floor(
    profile: str,
    n: int = 2000,
    seed: int = 900_001,
    known: Iterable[str] = (),
    references: Iterable[str] = (),
) -> dict[str, float]:
    """The floor over ``n`` scans drawn from a profile (no images are made: seconds)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    known = tuple(known)
    refs = _check_references(references)
    errs, truths = [], []
    for i in range(n):
        spec = sample_case(f"floor-{i}", seed * 100_003 + i, profile)
        errs.append(floor_error(spec, spec.patient_bmd_target, known, refs))
        truths.append(spec.patient_bmd_target)
    return _summary(errs, truths)


def read_specs(params_json: Path) -> dict[str, CaseSpec]:
    """The case specs that ``osteoscreen synth`` saved in synth_params.json, by case id."""
    data = json.loads(Path(params_json).read_text())
    specs = {}
    for d in data["specs"]:
        # Files written before the version was kept per case hold the cohort's (2 or older).
        d = {"generator_version": data.get("generator_version", 2), **d}
        d["scan"] = ScanParams(**d["scan"])
        specs[d["case_id"]] = CaseSpec(**d)
    return specs


def calibration_floor(
    cohort_rows: Iterable[dict[str, str]],
    params_json: Path,
    known: Iterable[str] = (),
    references: Iterable[str] = (),
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
    refs = _check_references(references)
    errs, truths = [], []
    for row in cohort_rows:
        spec = specs.get(row.get("case_id", ""))
        truth = row.get("patient_bmd", "")
        if spec is None or not truth:
            continue
        errs.append(floor_error(spec, float(truth), known, refs))
        truths.append(float(truth))
    if not errs:
        return None
    return {
        **_summary(errs, truths),
        "hidden_terms": list(HIDDEN_TERMS),
        "known": list(known),
        "references": list(refs),
    }
