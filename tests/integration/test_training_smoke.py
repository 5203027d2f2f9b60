"""A tiny training run of every model through the same code `make models` uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osteoscreen.io.volume import read_nifti
from osteoscreen.models import load_models
from osteoscreen.synth.cohort import write_cohort
from osteoscreen.training.densenet import train_densenet
from osteoscreen.training.segmenter import train_segmenter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    small = {"spacing_xy": 1.5, "slice_spacing": 3.0}
    return write_cohort(out, 3, 11, "train", dicom_share=0.0, workers=1, progress=False, overrides=small)


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


def test_core_is_kept_on_fine_tuning_unless_given(tiny_cohort: Path, tmp_path: Path) -> None:
    def core(folder: Path) -> list[int]:
        inference = json.loads((folder / "densenet_regressor" / "configs" / "inference.json").read_text())
        return inference["network_def"]["core"]

    base = tmp_path / "base"
    train_densenet("regressor", tiny_cohort, base, iterations=1, batch=2, progress=False, core=(2, 2, 1))
    assert core(base) == [2, 2, 1]
    # A fine-tune reads the bone where its starting network did ...
    kept = tmp_path / "kept"
    train_densenet("regressor", tiny_cohort, kept, iterations=1, batch=2, progress=False, init_from=base)
    assert core(kept) == [2, 2, 1]
    # ... unless told to read a wider core (the weights do not depend on it).
    wide = tmp_path / "wide"
    train_densenet(
        "regressor", tiny_cohort, wide, iterations=1, batch=2, progress=False, init_from=base, core=(4, 4, 2)
    )
    assert core(wide) == [4, 4, 2]
    with pytest.raises(ValueError, match="does not fit the crop"):
        train_densenet(
            "regressor", tiny_cohort, tmp_path / "big", iterations=1, progress=False, core=(5, 5, 20)
        )


def test_evaluate_writes_the_study_outputs(tiny_cohort: Path, tmp_path: Path) -> None:
    from osteoscreen.evaluation.run import evaluate_cohort
    from osteoscreen.training.make_models import fit_hu_rule_on_cohort

    train_segmenter(tiny_cohort, tmp_path, iterations=1, progress=False)
    for task in ("classifier", "regressor"):
        train_densenet(task, tiny_cohort, tmp_path, iterations=1, batch=2, progress=False)
    rule = fit_hu_rule_on_cohort(tiny_cohort, tmp_path / "cache")
    assert 0.3 < rule.slope < 2.0  # mg/cm3 per HU: the generator's calibration is about 0.8
    (tmp_path / "hu_rule.json").write_text(json.dumps(rule.to_dict()))
    out = tmp_path / "eval"
    m = evaluate_cohort(tiny_cohort, tmp_path, out, n_boot=20, progress=False)
    assert m["n_cases"] == 3
    saved = json.loads((out / "metrics.json").read_text())
    ref = saved["baselines"]["reference_segmentation"]
    assert ref["n_patients"] == 3
    assert {"mae", "rmse", "r2", "pearson_r", "p_value", "bland_altman"} <= set(ref["regression"])
    assert "auc_macro" in ref["classification"]
    # A generated cohort also gets the calibration floor (its specs are in synth_params.json).
    floor = saved["baselines"]["calibration_floor"]
    assert floor["n"] == 3 and floor["mae"] >= 0.0
    floor_refs = saved["baselines"]["calibration_floor_references"]
    assert floor_refs["n"] == 3 and floor_refs["references"] == ["fat", "muscle"]
    # Re-scoring on the first run's own segmentations gives the same results without the
    # segmenter, and without per-case reports it writes only what the metrics need.
    again = evaluate_cohort(
        tiny_cohort,
        tmp_path,
        tmp_path / "eval2",
        n_boot=20,
        progress=False,
        reuse_segmentation=out,
        reports=False,
    )
    assert again["segmentation_reused_from"] == str(out) and again["case_reports_written"] is False
    assert list(out.glob("cases/*/own/report.png"))
    assert not list((tmp_path / "eval2").glob("cases/*/*/report.png"))
    assert not list((tmp_path / "eval2").glob("cases/*/*/*.dcm"))
    for case in sorted((out / "cases").iterdir()):
        first = json.loads((case / "own" / "summary.json").read_text())
        second = json.loads((tmp_path / "eval2" / "cases" / case.name / "own" / "summary.json").read_text())
        assert second["status"] == first["status"]
        assert (second.get("patient") or {}).get("bmd_mg_cm3") == (first.get("patient") or {}).get(
            "bmd_mg_cm3"
        )
    with pytest.raises(ValueError, match="another folder"):
        evaluate_cohort(tiny_cohort, tmp_path, out, progress=False, reuse_segmentation=out)
    assert (out / "cases.csv").is_file()
    # A class cache: the first run writes the class maps, the second reads them; both give
    # the first run's segmentations and values.
    cache = tmp_path / "classes"
    for run in ("eval3", "eval4"):
        evaluate_cohort(
            tiny_cohort, tmp_path, tmp_path / run, n_boot=20, progress=False, reports=False, class_cache=cache
        )
    assert (cache / "segmenter.json").is_file()
    for case in sorted((out / "cases").iterdir()):
        first = json.loads((case / "own" / "summary.json").read_text())
        if first["status"] == "screened":
            assert (cache / f"{case.name}.npz").is_file()
        for run in ("eval3", "eval4"):
            other = tmp_path / run / "cases" / case.name / "own"
            assert json.loads((other / "summary.json").read_text()).get("patient") == first.get("patient")
            if first["status"] == "screened":
                a = read_nifti(other / "vertebrae_seg.nii.gz", dtype=np.int16).array
                b = read_nifti(case / "own" / "vertebrae_seg.nii.gz", dtype=np.int16).array
                assert np.array_equal(a, b)
