"""Fixtures of the MONAI Label tests: they run in the label environment (.venv-label, `make
label-test`) and start real servers: Orthanc (Debian package) and osteoscreen's MONAI Label app."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "apps" / "monailabel"))

from osteolabel.serve import DICOMWEB_PLUGIN, ORTHANC, running  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (MiB), from /proc."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024.0


class Stack:
    def __init__(self, orthanc, server, studies: dict[str, Path], start_s: float, work: Path):  # type: ignore[no-untyped-def]
        self.orthanc = orthanc
        self.server = server
        self.studies = studies
        self.start_s = start_s
        self.work = work
        self.figures: dict[str, float] = {}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (Path(ORTHANC).is_file() and Path(DICOMWEB_PLUGIN).is_file()):
        pytest.skip(
            f"Orthanc or its DICOMweb plugin is not installed ({ORTHANC}, {DICOMWEB_PLUGIN}): "
            "apt-get install orthanc orthanc-dicomweb (make label-deps)"
        )
    from osteoscreen.synth.cohort import write_cohort
    from osteoscreen.synth.example import write_example

    root = tmp_path_factory.mktemp("label")
    studies = {}
    for name, seed in (("demo", 2024), ("second", 2031)):
        write_example(root / name, seed=seed, spacing=(1.0, 3.0), nifti=True)
        studies[name] = root / name
    small = {"spacing_xy": 1.5, "slice_spacing": 3.0}
    replay = write_cohort(
        root / "replay", 2, 11, "train", dicom_share=0.0, workers=1, progress=False, overrides=small
    )
    t0 = time.monotonic()
    with running(
        root / "work",
        [studies["demo"] / "dicom", studies["second"] / "dicom"],
        conf={"replay_cohort": str(replay)},
        python=Path(sys.executable),
    ) as (orthanc, server):
        s = Stack(orthanc, server, studies, time.monotonic() - t0, root / "work")
        yield s
        report = root / "work" / "figures.txt"
        report.write_text("\n".join(f"{k}: {v}" for k, v in s.figures.items()))
        print("\nMONAI Label figures:", s.figures)
        keep = os.environ.get("OSTEOSCREEN_LABEL_KEEP")
        if keep:
            shutil.copytree(
                root / "work", keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("db", "*.nii.gz")
            )
