"""`osteoscreen run` end to end with the shipped models, and its defined outcomes on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from osteoscreen.labels import name_to_id
from osteoscreen.roi.trabecular import trabecular_roi
from osteoscreen.transforms import context_channels_of

from .conftest import run_cli

MODELS = Path(__file__).resolve().parents[2] / "models"

pytestmark = pytest.mark.slow


def test_demo_study_is_screened(
    demo_result: tuple[subprocess.CompletedProcess[str], Path], demo_study: Path
) -> None:
    proc, out = demo_result
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for f in ("summary.json", "vertebrae_seg.nii.gz", "report.png", "seg.dcm", "sr.dcm"):
        assert (out / f).is_file(), f
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging files left behind"
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "screened"
    assert s["vertebrae"], "no vertebra reported"
    for v in s["vertebrae"]:
        assert {
            "label",
            "trabecular_hu_mean",
            "roi_voxels",
            "roi_center_mm",
            "bmd_mg_cm3",
            "category",
            "probabilities",
        } <= set(v)
        assert v["category"] in ("normal", "osteopenia", "osteoporosis")
    assert set(s["patient"]) >= {"levels_used", "bmd_mg_cm3", "category", "classifier_category", "agreement"}
    assert "L1" in proc.stdout or "V1" in proc.stdout  # the table
    # The label map is on the input grid.
    seg = nib.load(str(out / "vertebrae_seg.nii.gz"))
    truth = nib.load(str(demo_study / "ct.nii.gz"))
    assert seg.shape == truth.shape


def test_sr_and_seg_read_back(demo_result: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = demo_result
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "summary.json").read_text())
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(BytesIO((out / "sr.dcm").read_bytes())))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(s["vertebrae"])
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(out / "seg.dcm"))
    labels = sorted(seg.get_segment_description(n).segment_label for n in seg.segment_numbers)
    assert labels == sorted(v["label"] for v in s["vertebrae"])


def test_given_segmentation_is_measured_exactly(demo_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        "--input",
        str(demo_study / "ct.nii.gz"),
        "--segmentation",
        str(demo_study / "bodies.nii.gz"),
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "summary.json").read_text())
    ct = nib.load(str(demo_study / "ct.nii.gz"))
    lab = np.asarray(nib.load(str(demo_study / "bodies.nii.gz")).dataobj)
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    spacing = ct.header.get_zooms()[:3]
    checked = 0
    for v in s["vertebrae"]:
        if "central_core_roi" in v["flags"]:
            continue
        roi = trabecular_roi(lab == name_to_id(v["label"]), spacing, 3.0)
        assert v["roi_voxels"] == int(roi.sum())
        assert v["trabecular_hu_mean"] == pytest.approx(float(hu[roi].mean()), abs=0.01)
        checked += 1
    assert checked >= 3
    assert s["input"]["segmentation_source"] == "given label map"
    # A NIfTI has no KVP: the assumption is stated; the fat reference of this trunk is found.
    ctx = s["input"]["scan_context"]
    assert ctx["kvp"] == 120.0 and not ctx["kvp_known"]
    assert ctx["fat_reference_used"] and -130.0 < ctx["fat_hu"] < -70.0
    if any(
        "context" in json.loads((MODELS / m / "configs" / "inference.json").read_text())
        for m in ("densenet_regressor", "densenet_classifier")
    ):
        assert any("tube voltage unknown" in w for w in s["warnings"])


def test_kvp_of_a_nifti_input(demo_study: Path, tmp_path: Path) -> None:
    args = ["--input", str(demo_study / "ct.nii.gz"), "--segmentation", str(demo_study / "bodies.nii.gz")]
    proc = run_cli("run", *args, "--kvp", "100", "--output", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    ctx = json.loads((tmp_path / "o" / "summary.json").read_text())["input"]["scan_context"]
    assert ctx["kvp"] == 100.0 and ctx["kvp_known"]
    # The paraspinal muscles behind the bodies are found, and can be left out.
    assert ctx["muscle_reference_used"] and 20.0 < ctx["muscle_hu"] < 90.0
    proc = run_cli("run", *args, "--no-muscle-reference", "--output", str(tmp_path / "o3"))
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "o3" / "summary.json").read_text())
    assert s["input"]["scan_context"]["muscle_hu"] is None
    reads_muscle = any(
        "muscle_hu"
        in context_channels_of(json.loads((MODELS / m / "configs" / "inference.json").read_text()))
        for m in ("densenet_regressor", "densenet_classifier")
    )
    assert any("turned off (--no-muscle-reference)" in w for w in s["warnings"]) == reads_muscle
    proc = run_cli("run", *args, "--kvp", "300", "--output", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "60-150" in proc.stderr and "Traceback" not in proc.stderr


def _assert_defined_failure(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("osteoscreen:")]
    assert len(lines) == 1, proc.stderr


def test_empty_folder_is_not_screenable(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    proc = run_cli("run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    _assert_defined_failure(proc, 3)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["status"] == "not_screenable" and s["reason"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json"]


def test_non_dicom_files(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "notes.txt").write_text("not an image")
    (d / "scan.dcm").write_bytes(b"\x00" * 1000)
    _assert_defined_failure(run_cli("run", "--input", str(d), "--output", str(tmp_path / "out")), 3)


def test_truncated_dicom(demo_study: Path, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    src = sorted((demo_study / "dicom").rglob("*.dcm"))[0]
    (d / "cut.dcm").write_bytes(src.read_bytes()[:3000])
    _assert_defined_failure(run_cli("run", "--input", str(d), "--output", str(tmp_path / "out")), 3)


def test_label_map_is_not_a_ct(demo_study: Path, tmp_path: Path) -> None:
    proc = run_cli("run", "--input", str(demo_study / "bodies.nii.gz"), "--output", str(tmp_path / "out"))
    _assert_defined_failure(proc, 3)


def test_missing_path_and_bad_arguments(tmp_path: Path, demo_study: Path) -> None:
    _assert_defined_failure(
        run_cli("run", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")), 2
    )
    proc = run_cli("run", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # A segmentation on another grid than the image.
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.int16), np.eye(4)), bad)
    proc = run_cli(
        "run",
        "--input",
        str(demo_study / "ct.nii.gz"),
        "--segmentation",
        str(bad),
        "--output",
        str(tmp_path / "o2"),
    )
    _assert_defined_failure(proc, 2)
    _assert_defined_failure(
        run_cli(
            "run",
            "--input",
            str(demo_study / "ct.nii.gz"),
            "--models",
            str(tmp_path),
            "--output",
            str(tmp_path / "o3"),
        ),
        2,
    )
    # A generator version that cannot be made any more: one line, nothing written.
    proc = run_cli("synth", "--out", str(tmp_path / "s"), "--n", "1", "--generator-version", "1")
    _assert_defined_failure(proc, 2)
    assert "--generator-version must be one of 2, 3" in proc.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None or shutil.which("dsrdump") is None,
    reason="dicom3tools / dcmtk not installed",
)
def test_outputs_validate(demo_result: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = demo_result
    assert proc.returncode == 0, proc.stderr
    for name in ("sr.dcm", "seg.dcm"):
        v = subprocess.run(["dciodvfy", str(out / name)], capture_output=True, text=True, check=False)
        errors = [line for line in (v.stdout + v.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (name, errors)
    d = subprocess.run(["dsrdump", str(out / "sr.dcm")], capture_output=True, text=True, check=False)
    assert d.returncode == 0 and "Imaging Measurement Report" in d.stdout
