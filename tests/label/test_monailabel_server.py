"""osteoscreen's MONAI Label app end to end: Orthanc (DICOMweb) + MONAI Label server on free
loopback ports, the generated studies stored in Orthanc as DICOM."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from .conftest import REPO, Stack, rss_mib

pytestmark = pytest.mark.slow

MODEL = "osteoscreen_vertebrae"


def _ct_series(stack: Stack) -> dict[str, str]:
    """Study name -> CT SeriesInstanceUID (the datastore's image id)."""
    out = {}
    for s in stack.orthanc.series("CT"):
        pid = json.loads(stack.orthanc.request("GET", f"/series/{s['ID']}/patient"))["MainDicomTags"][
            "PatientID"
        ]
        out["demo" if pid.endswith("2024") else "second"] = s["MainDicomTags"]["SeriesInstanceUID"]
    return out


def _multipart(resp: requests.Response) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {resp.headers['content-type']}\r\n\r\n".encode() + resp.content
    )
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in msg.iter_parts()
    }


def _canonical(img: nib.Nifti1Image) -> np.ndarray:
    return np.asanyarray(nib.as_closest_canonical(img).dataobj)


@pytest.fixture(scope="module")
def inferred(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    uid = _ct_series(stack)["demo"]
    stack.figures["server_start_s"] = round(stack.start_s, 1)
    stack.figures["rss_idle_mib"] = round(rss_mib(stack.server.proc.pid), 0)
    t = time.monotonic()
    r = requests.post(
        f"{stack.server.url}/infer/{MODEL}", params={"image": uid, "output": "all"}, timeout=600
    )
    stack.figures["infer_s"] = round(time.monotonic() - t, 1)
    stack.figures["rss_after_infer_mib"] = round(rss_mib(stack.server.proc.pid), 0)
    assert r.status_code == 200, r.text
    parts = _multipart(r)
    out = tmp_path_factory.mktemp("infer") / "label.nii.gz"
    out.write_bytes(parts["image"])
    return out, json.loads(parts["params"])


def test_server_starts_fast_and_lists_our_tasks(stack: Stack) -> None:
    assert stack.start_s < 60  # includes Orthanc and the upload of two studies
    info = requests.get(f"{stack.server.url}/info/", timeout=30).json()
    assert MODEL in info["models"]
    labels = info["models"][MODEL]["labels"]
    assert labels["L1"] == 20 and labels["T12"] == 19 and labels["V1"] == 101
    assert info["models"][MODEL]["label_colors"]["L1"]
    assert "osteoscreen_uncertainty" in info["strategies"]
    assert {MODEL, "osteoscreen_bmd"} <= set(info["trainers"])
    assert "osteoscreen_bmd" in info["scoring"]
    assert info["datastore"]["total"] == 2


def test_infer_returns_the_bodies_in_view(stack: Stack, inferred: tuple[Path, dict]) -> None:
    label_path, params = inferred
    lab = nib.load(label_path)
    image = nib.load(stack.studies["demo"] / "ct.nii.gz")
    truth = nib.load(stack.studies["demo"] / "bodies.nii.gz")
    assert lab.shape == image.shape
    pred, ref = _canonical(lab), _canonical(truth)
    ids = {int(v) for v in np.unique(pred) if v}
    assert len(ids) >= 3 and all(1 <= v <= 26 or v > 100 for v in ids)
    dice = 2 * ((pred > 0) & (ref > 0)).sum() / ((pred > 0).sum() + (ref > 0).sum())
    stack.figures["demo_body_dice_all_levels"] = round(float(dice), 3)
    assert dice > 0.6
    names = [v["label"] for v in params["osteoscreen"]["vertebrae"]]
    assert names and all(v["trabecular_hu_mean"] is not None for v in params["osteoscreen"]["vertebrae"])
    assert set(params["label_names"]) >= set(names)


def _label_info(arr: np.ndarray, names: dict[str, int]) -> list[dict]:
    by_id = {v: k for k, v in names.items()}
    return [{"name": by_id[int(v)], "idx": int(v)} for v in np.unique(arr) if v]


def test_save_score_activelearning_train(stack: Stack, inferred: tuple[Path, dict], tmp_path: Path) -> None:
    label_path, params = inferred
    uids = _ct_series(stack)
    url = stack.server.url
    # A "correction": the annotator deletes the lowest body.
    img = nib.load(label_path)
    arr = np.asanyarray(img.dataobj).astype(np.int16)
    ids = sorted(int(v) for v in np.unique(arr) if v)
    arr[arr == ids[-1]] = 0
    corrected = tmp_path / "corrected.nii.gz"
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), corrected)
    info = {"label_info": _label_info(arr, params["label_names"])}
    with open(corrected, "rb") as fh:
        r = requests.put(
            f"{url}/datastore/label",
            params={"image": uids["demo"], "tag": "final"},
            files={"label": ("corrected.nii.gz", fh)},
            data={"params": json.dumps(info)},
            timeout=300,
        )
    assert r.status_code == 200, r.text
    # Stored back in Orthanc as a DICOM SEG referencing the CT series.
    segs = stack.orthanc.series("SEG")
    assert len(segs) == 1
    inst = segs[0]["Instances"][0]
    tags = json.loads(stack.orthanc.request("GET", f"/instances/{inst}/simplified-tags"))
    assert tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == uids["demo"]

    # The annotator sees trabecular HU and BMD per vertebra measured on the saved label.
    r = requests.post(
        f"{url}/scoring/osteoscreen_bmd",
        params={"run_sync": "true"},
        json={"image": uids["demo"]},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    scored = r.json()[uids["demo"]]
    levels = [v["label"] for v in scored["vertebrae"]]
    assert len(levels) == len(ids) - 1
    assert all(
        isinstance(v["bmd_mg_cm3"], float) and v["trabecular_hu_mean"] is not None
        for v in scored["vertebrae"]
    )

    # Active learning: the unlabelled study, ranked by TTA disagreement.
    t = time.monotonic()
    r = requests.post(f"{url}/activelearning/osteoscreen_uncertainty", json={}, timeout=600)
    stack.figures["activelearning_s"] = round(time.monotonic() - t, 1)
    assert r.status_code == 200, r.text
    nxt = r.json()
    assert nxt["id"] == uids["second"], nxt
    assert 0.0 <= nxt["uncertainty"]["mean_disagreement"] <= 1.0 and nxt["uncertainty"]["vertebrae"]

    # One short fine-tuning run: a new models version that `osteoscreen run --models` takes.
    t = time.monotonic()
    r = requests.post(
        f"{url}/train/{MODEL}",
        params={"run_sync": "true"},
        json={"max_iterations": 2, "n_replay": 2},
        timeout=900,
    )
    stack.figures["train_2_iterations_s"] = round(time.monotonic() - t, 1)
    assert r.status_code == 200, r.text
    res = r.json()
    new = Path(res["models_dir"])
    assert res["model_version"] == "v001" and (new / "MODEL_VERSION.json").is_file()
    meta = json.loads((new / "vbnet_fine" / "configs" / "metadata.json").read_text())
    assert meta["trained"]["iterations"] == 2
    assert meta["trained"]["cohort"]["initialised_from"]
    version = json.loads((new / "MODEL_VERSION.json").read_text())
    assert version["labelled_studies"] == ["study000"] and version["replay_cases"] == 2
    out = tmp_path / "run"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "osteoscreen.cli",
            "run",
            "--input",
            str(stack.studies["demo"] / "dicom"),
            "--output",
            str(out),
            "--models",
            str(new),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        check=False,
    )
    # 3 (not screenable) is a defined outcome for a model fine-tuned for 2 iterations.
    assert run.returncode in (0, 3), run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] in ("screened", "not_screenable")
    if summary["status"] == "screened":
        assert summary["models"]["vbnet_fine"]["iterations"] == 2
    # The server now serves the new version.
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert info["models"][MODEL]["model_version"] == "v001"


def test_bad_requests_get_4xx_and_the_server_keeps_serving(stack: Stack) -> None:
    url = stack.server.url
    uid = _ct_series(stack)["demo"]
    r = requests.post(f"{url}/infer/no_such_model", params={"image": uid}, timeout=60)
    assert r.status_code == 404 and "no_such_model" in r.json()["detail"]
    r = requests.post(f"{url}/infer/{MODEL}", params={"image": "1.2.3.4.5.6.7"}, timeout=60)
    assert r.status_code == 404 and "unknown study" in r.json()["detail"]
    r = requests.post(f"{url}/train/no_such_model", timeout=60)
    assert r.status_code == 404
    r = requests.post(f"{url}/activelearning/no_such_strategy", json={}, timeout=60)
    assert r.status_code == 404
    r = requests.put(
        f"{url}/datastore/label",
        params={"image": uid, "tag": "final"},
        files={"label": ("broken.nii.gz", io.BytesIO(b"this is not a label map"))},
        timeout=60,
    )
    assert r.status_code == 400 and "label not saved" in r.json()["detail"]
    r = requests.put(
        f"{url}/datastore/label",
        params={"image": "1.2.3.4.5.6.7", "tag": "final"},
        files={"label": ("x.nii.gz", io.BytesIO(b"x"))},
        timeout=60,
    )
    assert r.status_code == 404
    r = requests.put(
        f"{url}/datastore/label",
        params={"image": uid, "tag": "final"},
        files={"label": ("x.nii.gz", io.BytesIO(b"x"))},
        data={"params": "{not json"},
        timeout=60,
    )
    assert r.status_code == 400
    assert requests.get(f"{url}/info/", timeout=30).status_code == 200
