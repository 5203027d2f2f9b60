"""The MONAI Deploy application graph on the demo study (the MAP's code path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def _run_app(inp: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOLOSCAN_INPUT_PATH": str(inp),
        "HOLOSCAN_OUTPUT_PATH": str(out),
        "HOLOSCAN_MODEL_PATH": str(REPO / "models"),
    }
    return subprocess.run(
        ["bash", "-c", f"ulimit -s 32768 2>/dev/null; exec {sys.executable} -m osteoscreen.app"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
        check=False,
    )


def test_app_graph_writes_the_outputs(demo_study: Path, tmp_path: Path) -> None:
    proc = _run_app(demo_study / "dicom", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for f in ("summary.json", "sr.dcm", "seg.dcm", "report.png", "vertebrae_seg.nii.gz"):
        assert (tmp_path / f).is_file(), f
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "screened" and s["vertebrae"]


def test_app_graph_records_not_screenable(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "x.txt").write_text("nothing")
    out = tmp_path / "out"
    _run_app(inp, out)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "not_screenable"


def test_map_entry_point_exit_code(tmp_path: Path) -> None:
    """apps/map (what the packager runs) turns a not-screenable study into exit 3 and one line."""
    inp = tmp_path / "in"
    inp.mkdir()
    env = {
        **os.environ,
        "HOLOSCAN_INPUT_PATH": str(inp),
        "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"),
        "HOLOSCAN_MODEL_PATH": str(REPO / "models"),
    }
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -s 32768 2>/dev/null; exec {sys.executable} apps/map"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "osteoscreen: not screenable: no DICOM files found" in proc.stderr
    assert "Traceback" not in proc.stderr
