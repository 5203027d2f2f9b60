"""Checks on the real data in ../shared/data (skipped with a reason where it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osteoscreen.io.dicom_write import write_ct_series
from osteoscreen.io.volume import read_nifti

from .conftest import run_cli

pytestmark = [pytest.mark.shared, pytest.mark.slow]

# ../shared/data/README.md: the reference bodies eroded 3 mm (one voxel each way at 3 mm).
REFERENCE = {
    "T12": (636, 105.5),
    "L1": (781, 117.0),
    "L2": (804, 118.2),
    "L3": (834, 113.8),
    "L4": (846, 117.7),
    "L5": (756, 126.8),
}


def test_reference_trabecular_values_with_given_segmentation(shared_data: Path, tmp_path: Path) -> None:
    ex = shared_data / "ct" / "totalseg_example"
    proc = run_cli(
        "run",
        "--input",
        str(ex / "example_ct.nii.gz"),
        "--segmentation",
        str(ex / "labels" / "vertebral_bodies_verse.nii.gz"),
        "--output",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    got = {v["label"]: v for v in s["vertebrae"]}
    for level, (voxels, mean) in REFERENCE.items():
        assert got[level]["roi_voxels"] == voxels, level
        assert got[level]["trabecular_hu_mean"] == pytest.approx(mean, abs=1.0), level


def test_own_segmentation_of_the_real_example(shared_data: Path, tmp_path: Path) -> None:
    """The VB-Net (fine stage fine-tuned on the VerSe CTs; this CT never seen) on a real scan:
    issue 4's goals. Measured: every level T12-L5 right and no other body (last rib and sacrum
    agree: confidence 1.0); Dice T12 0.864, L1 0.880, L2 0.860, L3 0.906, L4 0.912; HU L1-L3
    +5.8 / +6.7 / +5.3 from the reference.
    """
    import nibabel as nib

    ex = shared_data / "ct" / "totalseg_example"
    proc = run_cli("run", "--input", str(ex / "example_ct.nii.gz"), "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    pred = np.asanyarray(nib.load(tmp_path / "vertebrae_seg.nii.gz").dataobj)
    ref = np.asanyarray(nib.load(ex / "labels" / "vertebral_bodies_verse.nii.gz").dataobj)
    s = json.loads((tmp_path / "summary.json").read_text())
    got = {v["label"]: v for v in s["vertebrae"]}
    for vid, level in ((19, "T12"), (20, "L1"), (21, "L2"), (22, "L3"), (23, "L4"), (24, "L5")):
        a, b = pred == vid, ref == vid
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= (0.85 if level != "L5" else 0.6), (level, dice)
        assert level in got
    for level in ("L1", "L2", "L3"):
        assert got[level]["trabecular_hu_mean"] == pytest.approx(REFERENCE[level][1], abs=8.0), level
    # No sacral segment or pelvic piece reported as a body (it had been "V7").
    assert set(got) == {"T12", "L1", "L2", "L3", "L4", "L5"}
    assert min(v["level_confidence"] for v in s["vertebrae"]) >= 0.8


@pytest.fixture(scope="module")
def example_as_dicom(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    vol = read_nifti(shared_data / "ct" / "totalseg_example" / "example_ct.nii.gz")
    vol.array = np.clip(vol.array, -1024, 3071)
    out = tmp_path_factory.mktemp("example_dicom")
    write_ct_series(
        vol,
        out,
        patient_id="TS-EXAMPLE",
        patient_name="Example^TotalSegmentator",
        series_description="abdomen native 3mm",
    )
    return out


def test_example_ct_as_dicom_series(example_as_dicom: Path, tmp_path: Path) -> None:
    proc = run_cli("run", "--input", str(example_as_dicom), "--output", str(tmp_path))
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 3), proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    if proc.returncode == 0:
        assert (tmp_path / "sr.dcm").is_file() and (tmp_path / "seg.dcm").is_file()
        assert s["vertebrae"]
    else:
        assert s["status"] == "not_screenable" and s["reason"]


def test_head_ct_is_not_screenable(shared_data: Path, tmp_path: Path) -> None:
    proc = run_cli("run", "--input", str(shared_data / "dicom" / "ge_head_tilt"), "--output", str(tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "not_screenable"


def test_single_images_are_not_screenable(shared_data: Path, tmp_path: Path) -> None:
    proc = run_cli("run", "--input", str(shared_data / "dicom" / "codecs"), "--output", str(tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_robustness_variants_of_the_real_example(shared_data: Path, tmp_path: Path) -> None:
    """`osteoscreen robustness`: a reoriented copy gives the same bodies as the original."""
    ex = shared_data / "ct" / "totalseg_example"
    proc = run_cli(
        "robustness",
        "--image",
        str(ex / "example_ct.nii.gz"),
        "--labels",
        str(ex / "labels" / "vertebral_bodies_verse.nii.gz"),
        "--out",
        str(tmp_path),
        "--variants",
        "original",
        "lps",
    )
    assert proc.returncode == 0, proc.stderr
    cases = {c["case_id"]: c for c in json.loads((tmp_path / "robustness.json").read_text())["cases"]}
    assert set(cases) == {"original", "lps"}
    for c in cases.values():
        assert min(c["dice_matched"][n] for n in ("T12", "L1", "L2", "L3", "L4")) >= 0.85
        assert c["levels"]["correct"] == 6 and c["levels"]["missed"] == 0
        assert all(abs(c["hu_error"][n]) <= 8.0 for n in ("L1", "L2", "L3"))
    assert cases["lps"]["dice"] == cases["original"]["dice"]
    assert "| lps |" in (tmp_path / "robustness.md").read_text()
