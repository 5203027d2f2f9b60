"""Synthetic CT cohorts with known BMD per vertebra: sampling, rendering, writing.

``osteoscreen synth --out DIR --n N --seed S --profile train|test|independent`` writes
``DIR/cases/<id>/{ct.nii.gz, bodies.nii.gz, classes.nii.gz}``, a DICOM series for a share of
the cases (``DIR/cases/<id>/dicom/``), and ``DIR/cohort.csv``.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..config import DEFAULT_CONFIG, Thresholds
from ..io.volume import Volume
from ..labels import SegClass, name_to_id
from .anatomy import LEVELS, NECK, Grid, Tissue, draw_anatomy, make_spine
from .physics import ScanParams, render_ct

__all__ = [
    "COHORT_FIELDS",
    "GENERATOR_VERSION",
    "PROFILES",
    "REFERENCE_CALIB_SLOPE",
    "CaseSpec",
    "SynthCase",
    "generate_case",
    "sample_case",
    "write_cohort",
]

log = logging.getLogger(__name__)

PROFILES = ("train", "test", "independent")
#: Class mix of the reference study: osteoporosis, osteopenia, normal.
CLASS_MIX = {"osteoporosis": 0.27, "osteopenia": 0.32, "normal": 0.41}
#: Mean BMD of a level relative to the patient's L1-L3 value (thoracic bodies are denser).
LEVEL_TREND = {name: 1.0 + 0.012 * (12 - int(name[1:])) if name[0] == "T" else 1.0 for name in LEVELS}
LEVEL_TREND.update({"T12": 1.03, "L1": 1.01, "L2": 1.0, "L3": 0.99, "L4": 0.985, "L5": 0.99})

PROTOCOLS = ("chest", "abdomen", "chest_abdomen", "lumbar")
#: Bumped whenever the same seed would give other images (make_models then regenerates).
#: 2: effective energy per vendor acting on bone, fat and iodine together; kVp 80-140 everywhere.
#: 3: C6 and C7 above T1 and the base of the neck above the lung apices; chest scans start
#: above T1 (at C7 or C6), as a chest CT from the thoracic inlet does. Only chest scans change:
#: the neck is drawn from its own random stream, so every other image is the same as in 2.
GENERATOR_VERSION = 3
#: Versions ``osteoscreen synth --generator-version`` can still make: 2 regenerates the cohort
#: the shipped models were trained on (models/TRAINING_densenet.json and hu_rule.json name it).
GENERATOR_VERSIONS = (2, 3)
BMD_COLUMNS = [f"bmd_{name}" for name in LEVELS]
COHORT_FIELDS = [
    "case_id",
    "image",
    "label",
    "classes",
    "dicom_dir",
    "profile",
    "protocol",
    "scanner",
    "kvp",
    "kernel",
    "contrast_phase",
    "spacing_x",
    "spacing_y",
    "spacing_z",
    "slice_thickness",
    "noise_hu",
    "calib_slope",
    "energy_shift",
    "gain",
    "offset",
    "levels_in_view",
    "excluded_levels",
    *BMD_COLUMNS,
    "patient_bmd",
    "category",
    "patient_levels",
]


@dataclass
class CaseSpec:
    """Everything random about one case, drawn up front so a case can be regenerated alone."""

    case_id: str
    seed: int
    profile: str
    protocol: str
    scan: ScanParams
    spacing_xy: float
    slice_spacing: float
    patient_bmd_target: float
    body_a: float
    body_b: float
    fat_mm: float
    write_dicom: bool
    max_z_mm: float = 360.0
    extra: dict[str, Any] = field(default_factory=dict)
    generator_version: int = GENERATOR_VERSION


@dataclass
class SynthCase:
    spec: CaseSpec
    volume: Volume
    bodies: np.ndarray
    classes: np.ndarray
    bmd: dict[str, float]
    levels_in_view: list[str]
    excluded: list[str]
    patient_bmd: float | None
    category: str | None
    patient_levels: list[str]


#: mg/cm3 of mineral per HU of trabecular bone at 120 kVp on the reference scanner; each scan
#: draws its own slope around it (a bone-only calibration difference, invisible in the image).
REFERENCE_CALIB_SLOPE = 0.80
#: Other hospitals' scanners: effective-energy offset (kVp-equivalent) of each vendor's filtration.
VENDOR_ENERGY_SHIFT = {"B-64": -6.0, "C-128": 8.0, "D-16": -10.0, "E-320": 5.0}


def _scan_for_profile(profile: str, rng: np.random.Generator) -> tuple[ScanParams, float, float]:
    # Both sites use automatic tube-voltage selection, so every profile holds several kVp.
    if profile == "independent":
        # Other hospitals: other vendors (filtration, bone calibration), more low-kVp and
        # low-dose scans, sharper kernels, and a looser HU calibration of the scanner.
        scanner = str(rng.choice(list(VENDOR_ENERGY_SHIFT)))
        shift = VENDOR_ENERGY_SHIFT[scanner] + float(rng.normal(0.0, 2.0))
        slope_sd = 0.03
        kvp = int(rng.choice([80, 100, 120, 140], p=[0.15, 0.35, 0.3, 0.2]))
        kernel = str(rng.choice(["soft", "standard", "sharp"], p=[0.2, 0.4, 0.4]))
        noise = float(rng.uniform(15.0, 90.0))
        gain = float(rng.normal(1.0, 0.04))
        offset = float(rng.normal(0.0, 10.0))
        phase = str(rng.choice(["native", "arterial", "portal"], p=[0.35, 0.2, 0.45]))
        bh = float(rng.uniform(0.03, 0.07))
    else:
        scanner = "A-64"
        shift = 0.0
        slope_sd = 0.02
        kvp = int(rng.choice([80, 100, 120, 140], p=[0.08, 0.2, 0.57, 0.15]))
        kernel = str(rng.choice(["soft", "standard", "sharp"], p=[0.35, 0.5, 0.15]))
        noise = float(rng.uniform(8.0, 45.0))
        gain = float(rng.normal(1.0, 0.01))
        offset = float(rng.normal(0.0, 3.0))
        phase = str(rng.choice(["native", "arterial", "portal"], p=[0.5, 0.15, 0.35]))
        bh = float(rng.uniform(0.02, 0.04))
    spacing_xy = float(rng.uniform(0.6, 1.0))
    slice_spacing = float(
        rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0], p=[0.08, 0.25, 0.17, 0.15, 0.1, 0.15, 0.1])
    )
    blur = {"soft": 0.9, "standard": 0.7, "sharp": 0.45}[kernel] * rng.uniform(0.85, 1.15)
    scan = ScanParams(
        kvp=kvp,
        scanner=scanner,
        kernel=kernel,
        noise_hu=noise,
        blur_mm=float(blur),
        slice_thickness=slice_spacing,
        contrast_phase=phase,
        calib_slope=float(REFERENCE_CALIB_SLOPE * rng.normal(1.0, slope_sd)),
        gain=gain,
        offset=offset,
        beam_hardening=bh,
        energy_shift=shift,
    )
    return scan, spacing_xy, slice_spacing


def _sample_patient_bmd(rng: np.random.Generator) -> float:
    cat = rng.choice(list(CLASS_MIX), p=list(CLASS_MIX.values()))
    if cat == "osteoporosis":
        return float(rng.uniform(30.0, 80.0))
    if cat == "osteopenia":
        return float(rng.uniform(80.0, 120.0))
    return float(120.0 + rng.gamma(2.0, 25.0) if rng.random() < 0.9 else rng.uniform(180.0, 250.0))


def sample_case(case_id: str, seed: int, profile: str, dicom_share: float = 0.2) -> CaseSpec:
    """Draw the parameters of one case from its seed."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    rng = np.random.default_rng(seed)
    scan, sxy, sz = _scan_for_profile(profile, rng)
    protocol = str(rng.choice(PROTOCOLS, p=[0.3, 0.35, 0.15, 0.2]))
    return CaseSpec(
        case_id=case_id,
        seed=seed,
        profile=profile,
        protocol=protocol,
        scan=scan,
        spacing_xy=sxy,
        slice_spacing=sz,
        patient_bmd_target=min(_sample_patient_bmd(rng), 250.0),
        body_a=float(rng.uniform(130.0, 190.0)),
        body_b=float(rng.uniform(95.0, 140.0)),
        fat_mm=float(rng.uniform(6.0, 40.0)),
        write_dicom=bool(rng.random() < dicom_share),
        max_z_mm=250.0 if sz < 1.0 else 360.0,
    )


def _z_window(spec: CaseSpec, spine: Any, rng: np.random.Generator) -> tuple[float, float]:
    lv = {level.name: level for level in spine.levels}
    if spec.protocol == "chest":
        top = lv["T2"].z_top + rng.uniform(0, 40)
        if spine.neck:
            # From the thoracic inlet: the top slice lies 10-50 mm above T1, in C7 or C6.
            top += lv["T1"].z_top - lv["T2"].z_top + 10.0
        bottom = lv["L1"].z_bottom - rng.uniform(-10, 40)
    elif spec.protocol == "abdomen":
        top = lv["T10"].z_top + rng.uniform(0, 40)
        bottom = spine.sacrum_top - rng.uniform(60, 140)
    elif spec.protocol == "lumbar":
        top = lv["T12"].z_top + rng.uniform(-5, 20)
        bottom = spine.sacrum_top - rng.uniform(10, 50)
    else:
        top = lv["T6"].z_top
        bottom = spine.sacrum_top - 60
    budget = spec.max_z_mm
    if spine.neck and spec.protocol == "chest" and budget >= 360.0:
        budget += 60.0  # from the thoracic inlet to the upper abdomen, as a chest CT runs
    if top - bottom > budget:
        # Keep the lumbar spine in a long scan that does not fit the budget.
        if spec.protocol == "chest":
            top = bottom + budget
        else:
            bottom = max(bottom, lv["L3"].z_bottom - budget * 0.35)
            top = bottom + budget
    return bottom, top


def generate_case(spec: CaseSpec, thresholds: Thresholds | None = None) -> SynthCase:
    """Render one case from its spec."""
    thresholds = thresholds or DEFAULT_CONFIG.thresholds
    rng = np.random.default_rng(spec.seed + 7919)
    # The neck (version 3) has a random stream of its own: images below T1 stay as in version 2.
    neck_rng = np.random.default_rng(spec.seed + 104_729) if spec.generator_version >= 3 else None
    spine = make_spine(rng, neck_rng=neck_rng)
    # Per-level BMD: the patient's value, a level trend and a small level-to-level scatter.
    bmd = {
        name: float(np.clip(spec.patient_bmd_target * LEVEL_TREND[name] + rng.normal(0.0, 3.0), 15.0, 300.0))
        for name in LEVELS
    }
    for level in spine.levels:
        if level.compression > 0:
            bmd[level.name] = float(max(15.0, bmd[level.name] * 0.85))
    if neck_rng is not None:
        for level in spine.neck:
            bmd[level.name] = float(
                np.clip(spec.patient_bmd_target * LEVEL_TREND["T1"] + neck_rng.normal(0.0, 3.0), 15.0, 300.0)
            )
    bottom, top = _z_window(spec, spine, rng)
    sz = spec.slice_spacing
    if spec.extra.get("n_slices"):
        # A fixed number of slices (benchmarks): centred on the lumbar spine, as far as anatomy goes.
        n_req = int(spec.extra["n_slices"])
        l2_z = spine.levels[LEVELS.index("L2")].z_center
        bottom = l2_z - 0.45 * n_req * sz
        top = bottom + n_req * sz
    sub = max(1, int(round(sz / 1.0))) if sz > 1.25 else 1
    fine_z = sz / sub
    nz = int(np.floor((top - bottom) / sz))
    n_xy = int(min(512, np.ceil((2 * spec.body_a + 40.0) / spec.spacing_xy)))
    n_y = int(min(512, np.ceil((2 * spec.body_b + 60.0) / spec.spacing_xy)))
    n_xy = max(n_xy, n_y)  # square matrix, as scanners reconstruct
    if spec.extra.get("matrix"):
        n_xy = int(spec.extra["matrix"])
    half = n_xy * spec.spacing_xy / 2
    shift = rng.uniform(-15, 15, size=2)
    grid = Grid(
        shape=(n_xy, n_xy, nz * sub),
        spacing=(spec.spacing_xy, spec.spacing_xy, fine_z),
        origin=(-half + shift[0], -half + shift[1] + 10.0, bottom + fine_z / 2),
    )
    diaphragm = spine.levels[LEVELS.index("T10")].z_center + rng.uniform(-20, 20)
    apex = None if neck_rng is None else spine.levels[0].z_top + float(neck_rng.uniform(-5.0, 10.0))
    tissue, levels_fine = draw_anatomy(
        grid,
        spine,
        rng,
        body_a=spec.body_a,
        body_b=spec.body_b,
        fat_mm=spec.fat_mm,
        diaphragm_z=diaphragm,
        apex_z=apex,
    )
    bmd_by_id = {name_to_id(k): v for k, v in bmd.items()}
    hu = render_ct(
        tissue,
        levels_fine,
        bmd_by_id,
        spec.scan,
        grid.spacing,
        sub,
        spec.body_a + spec.body_b,
        rng,
    )
    mid = slice(sub // 2, nz * sub, sub)
    bodies = np.ascontiguousarray(levels_fine[:, :, mid])
    classes = _classes_from_tissue(tissue[:, :, mid])
    affine = np.diag([spec.spacing_xy, spec.spacing_xy, sz, 1.0])
    affine[:3, 3] = (grid.origin[0], grid.origin[1], bottom + sz / 2)
    volume = Volume(hu, affine, meta={"kvp": spec.scan.kvp, "slice_thickness": sz})
    present = set(np.unique(bodies).tolist())
    in_view = [name for name in NECK + LEVELS if name_to_id(name) in present]
    # A level counts as in view when most of it is inside the scan (partial ones are hard cases).
    full = []
    for level in spine.neck + spine.levels:
        if level.name in in_view and level.z_bottom >= bottom and level.z_top <= bottom + nz * sz:
            full.append(level.name)
    excluded = [lv.name for lv in spine.levels if lv.name in in_view and (lv.compression > 0 or lv.screws)]
    levels_cfg = DEFAULT_CONFIG.chest_levels if spec.protocol == "chest" else DEFAULT_CONFIG.abdomen_levels
    used = [name for name in levels_cfg if name in full and name not in excluded]
    patient = float(np.mean([bmd[n] for n in used])) if used else None
    return SynthCase(
        spec=spec,
        volume=volume,
        bodies=bodies,
        classes=classes,
        bmd={k: round(v, 2) for k, v in bmd.items()},
        levels_in_view=in_view,
        excluded=excluded,
        patient_bmd=None if patient is None else round(patient, 2),
        category=None if patient is None else thresholds.categorize(patient),
        patient_levels=used,
    )


def _classes_from_tissue(t: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(Tissue) + 1, dtype=np.uint8)
    lut[[Tissue.CORTEX, Tissue.TRABECULAR, Tissue.ISLAND]] = SegClass.BODY
    lut[Tissue.DISC] = SegClass.DISC
    lut[Tissue.POSTERIOR] = SegClass.POSTERIOR
    lut[Tissue.RIB] = SegClass.RIB
    lut[Tissue.PELVIS] = SegClass.SACRUM
    return np.asarray(lut[t])


def write_case_dicom(case: SynthCase, ddir: Path, *, patient_id: str, patient_name: str) -> list[Path]:
    """A case's CT as a DICOM series, with its scanner parameters in the headers."""
    from ..io.dicom_write import write_ct_series

    spec = case.spec
    return write_ct_series(
        case.volume,
        ddir,
        patient_id=patient_id,
        patient_name=patient_name,
        series_description=f"{spec.protocol} {spec.scan.kernel} {spec.slice_spacing:g}mm (synthetic)",
        kvp=spec.scan.kvp,
        kernel=spec.scan.kernel.upper(),
        manufacturer=f"osteoscreen-synth {spec.scan.scanner}",
        slice_thickness=spec.slice_spacing,
        scanner_order=True,
    )


def _write_case(out: Path, spec: CaseSpec) -> dict[str, Any]:
    case = generate_case(spec)
    cdir = out / "cases" / spec.case_id
    cdir.mkdir(parents=True, exist_ok=True)
    aff = case.volume.affine
    nib.save(nib.Nifti1Image(np.round(case.volume.array).astype(np.int16), aff), cdir / "ct.nii.gz")
    nib.save(nib.Nifti1Image(case.bodies.astype(np.int16), aff), cdir / "bodies.nii.gz")
    nib.save(nib.Nifti1Image(case.classes.astype(np.uint8), aff), cdir / "classes.nii.gz")
    dicom_dir = ""
    if spec.write_dicom:
        ddir = cdir / "dicom"
        write_case_dicom(
            case, ddir, patient_id=f"SYN-{spec.case_id}", patient_name=f"Synthetic^{spec.case_id}"
        )
        dicom_dir = str(ddir.relative_to(out))
    row: dict[str, Any] = {
        "case_id": spec.case_id,
        "image": str((cdir / "ct.nii.gz").relative_to(out)),
        "label": str((cdir / "bodies.nii.gz").relative_to(out)),
        "classes": str((cdir / "classes.nii.gz").relative_to(out)),
        "dicom_dir": dicom_dir,
        "profile": spec.profile,
        "protocol": spec.protocol,
        "scanner": spec.scan.scanner,
        "kvp": spec.scan.kvp,
        "kernel": spec.scan.kernel,
        "contrast_phase": spec.scan.contrast_phase,
        "spacing_x": round(spec.spacing_xy, 4),
        "spacing_y": round(spec.spacing_xy, 4),
        "spacing_z": spec.slice_spacing,
        "slice_thickness": spec.slice_spacing,
        "noise_hu": round(spec.scan.noise_hu, 1),
        "calib_slope": round(spec.scan.calib_slope, 4),
        "energy_shift": round(spec.scan.energy_shift, 2),
        "gain": round(spec.scan.gain, 4),
        "offset": round(spec.scan.offset, 2),
        "levels_in_view": " ".join(case.levels_in_view),
        "excluded_levels": " ".join(case.excluded),
        "patient_bmd": "" if case.patient_bmd is None else case.patient_bmd,
        "category": case.category or "",
        "patient_levels": " ".join(case.patient_levels),
    }
    for name in LEVELS:
        row[f"bmd_{name}"] = case.bmd[name] if name in case.levels_in_view else ""
    return row


def write_cohort(
    out: Path,
    n: int,
    seed: int,
    profile: str,
    *,
    dicom_share: float = 0.2,
    workers: int | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    generator_version: int = GENERATOR_VERSION,
) -> Path:
    """Generate ``n`` cases into ``out`` and write ``out/cohort.csv``.

    ``generator_version`` (one of ``GENERATOR_VERSIONS``) makes the images an earlier
    version made from the same seed.

    Returns:
        The path of cohort.csv.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if generator_version not in GENERATOR_VERSIONS:
        raise ValueError(f"generator_version must be one of {GENERATOR_VERSIONS}, got {generator_version}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = [
        replace(
            sample_case(f"{profile}-{seed}-{i:04d}", seed * 100_003 + i, profile, dicom_share),
            generator_version=generator_version,
        )
        for i in range(n)
    ]
    workers = workers or min(os.cpu_count() or 1, 4)
    rows: list[dict[str, Any]] = []
    from tqdm import tqdm

    bar = tqdm(total=n, desc=f"synth {profile}", unit="case", disable=not progress)
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(_write_case, [out] * n, specs):
                rows.append(row)
                bar.update()
    else:
        for spec in specs:
            rows.append(_write_case(out, spec))
            bar.update()
    bar.close()
    path = out / "cohort.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COHORT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    (out / "synth_params.json").write_text(
        __import__("json").dumps(
            {
                "n": n,
                "seed": seed,
                "profile": profile,
                "generator_version": generator_version,
                "specs": [asdict(s) for s in specs],
            },
            indent=1,
        )
    )
    return path
