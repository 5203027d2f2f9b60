"""One synthetic CT study written as a DICOM series: the demo, the benchmarks and the MAP test."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from .cohort import generate_case, sample_case, write_case_dicom

__all__ = ["write_example"]

log = logging.getLogger(__name__)


def write_example(
    out: Path,
    *,
    seed: int = 2024,
    slices: int | None = None,
    matrix: int | None = None,
    spacing: Sequence[float] | None = None,
    nifti: bool = False,
    profile: str = "test",
    protocol: str = "abdomen",
) -> Path:
    """Generate one study and write it to ``out/dicom`` (plus truth.json; NIfTI if asked).

    Returns:
        The DICOM folder.
    """
    spec = sample_case(f"example-{seed}", seed, profile, dicom_share=1.0)
    spec = replace(spec, protocol=protocol, extra=dict(spec.extra))
    if spacing is not None:
        spec = replace(spec, spacing_xy=float(spacing[0]), slice_spacing=float(spacing[1]))
        spec.scan.slice_thickness = float(spacing[1])
    if slices is not None:
        spec.extra["n_slices"] = int(slices)
        spec.max_z_mm = 10_000.0
    if matrix is not None:
        spec.extra["matrix"] = int(matrix)
    case = generate_case(spec)
    out = Path(out)
    ddir = out / "dicom"
    write_case_dicom(case, ddir, patient_id=f"OSTEO-DEMO-{seed}", patient_name=f"Demo^Synthetic^{seed}")
    truth = {
        "seed": seed,
        "protocol": spec.protocol,
        "shape": list(case.volume.shape),
        "spacing_mm": [spec.spacing_xy, spec.spacing_xy, spec.slice_spacing],
        "levels_in_view": case.levels_in_view,
        "bmd_mg_cm3": {k: v for k, v in case.bmd.items() if k in case.levels_in_view},
        "patient_bmd_mg_cm3": case.patient_bmd,
        "category": case.category,
        "patient_levels": case.patient_levels,
        "excluded_levels": case.excluded,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    if nifti:
        nib.save(
            nib.Nifti1Image(np.round(case.volume.array).astype(np.int16), case.volume.affine),
            out / "ct.nii.gz",
        )
        nib.save(nib.Nifti1Image(case.bodies.astype(np.int16), case.volume.affine), out / "bodies.nii.gz")
    return ddir
