from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`osteoscreen ...` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "osteoscreen.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated abdominal CT study (DICOM + NIfTI + truth), small enough for tests."""
    from osteoscreen.synth.example import write_example

    out = tmp_path_factory.mktemp("demo_study")
    write_example(out, seed=2024, spacing=(1.0, 3.0), nifti=True)
    return out


@pytest.fixture(scope="session")
def demo_result(
    demo_study: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo_out")
    return run_cli("run", "--input", str(demo_study / "dicom"), "--output", str(out)), out
