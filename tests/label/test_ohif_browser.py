"""OHIF (served by our MONAI Label server, reading Orthanc through its DICOMweb proxy) in
headless Debian Chromium: the study list shows the demo study, and the viewer draws its CT."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import Stack

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _study_uid(stack: Stack, patient_id: str) -> str:
    for s in stack.orthanc.series("CT"):
        study = json.loads(stack.orthanc.request("GET", f"/series/{s['ID']}/study"))
        if study["PatientMainDicomTags"]["PatientID"] == patient_id:
            return str(study["MainDicomTags"]["StudyInstanceUID"])
    raise AssertionError(f"no study of {patient_id} in Orthanc")


def test_ohif_lists_and_shows_the_demo_study(stack: Stack, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"Debian chromium is not installed ({CHROMIUM}): apt-get install chromium (make label-deps)"
        )
    from PIL import Image
    from playwright.sync_api import sync_playwright

    url = stack.server.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/ohif/", wait_until="domcontentloaded", timeout=120_000)
            # The study list (QIDO through /proxy/dicom) shows the demo patient's id.
            page.wait_for_selector("text=OSTEO-DEMO-2024", timeout=120_000)
            page.screenshot(path=str(tmp_path / "ohif_study_list.png"))
            page.get_by_text("OSTEO-DEMO-2024").first.click()
            page.goto(
                f"{url}/ohif/viewer?StudyInstanceUIDs={_study_uid(stack, 'OSTEO-DEMO-2024')}",
                wait_until="domcontentloaded",
                timeout=120_000,
            )
            page.wait_for_selector("canvas", timeout=120_000)
            shot = tmp_path / "ohif_viewer.png"
            pixels = np.zeros((1, 1))
            for _ in range(60):  # the series loads slice by slice; wait until the CT is drawn
                page.wait_for_timeout(2000)
                page.screenshot(path=str(shot))
                box = page.locator("canvas").first.bounding_box()
                img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
                if box:
                    x0, y0 = int(box["x"]), int(box["y"])
                    pixels = img[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
                if pixels.size > 10_000 and pixels.std() > 20 and (pixels > 60).mean() > 0.05:
                    break
        finally:
            browser.close()
    keep = os.environ.get("OSTEOSCREEN_LABEL_KEEP")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for f in tmp_path.glob("*.png"):
            shutil.copy2(f, Path(keep) / f.name)
    # A CT slice: a bright body on a dark background, not an empty or uniform canvas.
    assert pixels.size > 10_000, "no viewport canvas"
    assert pixels.std() > 20 and (pixels > 60).mean() > 0.05, "the viewport shows no image"
