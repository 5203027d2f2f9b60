"""A tiny training run of every model through the same code `make models` uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osteoscreen.models import load_models
from osteoscreen.synth.cohort import write_cohort
from osteoscreen.training.densenet import train_densenet
from osteoscreen.training.segmenter import train_segmenter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    return write_cohort(out, 3, 11, "train", dicom_share=0.0, workers=1, progress=False)


def test_cohort_csv(tiny_cohort: Path) -> None:
    import csv

    rows = list(csv.DictReader(tiny_cohort.open()))
    assert len(rows) == 3
    for r in rows:
        assert (tiny_cohort.parent / r["image"]).is_file()
        assert r["category"] in ("normal", "osteopenia", "osteoporosis")
        assert float(r["patient_bmd"]) > 0


def test_train_all_models_and_load_them(tiny_cohort: Path, tmp_path: Path) -> None:
    states = train_segmenter(tiny_cohort, tmp_path, iterations=2, progress=False)
    assert set(states) == {"vbnet_coarse", "vbnet_fine"}
    for task in ("classifier", "regressor"):
        st = train_densenet(task, tiny_cohort, tmp_path, iterations=2, batch=2, progress=False)
        assert st.iteration == 2 and st.history
    models = load_models(tmp_path)
    meta = json.loads((tmp_path / "densenet_regressor" / "configs" / "metadata.json").read_text())
    assert meta["trained"]["cohort"]["seed"] == 11 and meta["trained"]["iterations"] == 2
    assert models.describe()["vbnet_fine"]["iterations"] == 2
    # Resuming continues from the last checkpoint instead of starting over.
    st = train_densenet("regressor", tiny_cohort, tmp_path, iterations=4, batch=2, progress=False)
    assert st.iteration == 4 and [h["iteration"] for h in st.history] == [2, 4]
