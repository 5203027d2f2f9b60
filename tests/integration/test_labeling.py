"""osteoscreen.labeling: what the MONAI Label app builds on, without MONAI Label."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from osteoscreen.errors import InputError
from osteoscreen.labeling import (
    LabelledCase,
    latest_version,
    new_model_version,
    read_bmd_reference,
    retrain_bmd_models,
    validate_label_file,
    vertebra_label_names,
)
from osteoscreen.models import default_models_dir, load_models
from osteoscreen.training.common import ensemble_size

pytestmark = pytest.mark.slow


def test_label_names_cover_levels_and_unknown_levels() -> None:
    names = vertebra_label_names()
    assert names["T12"] == 19 and names["L1"] == 20 and names["S1"] == 26
    assert names["V1"] == 101 and names["V12"] == 112
    assert len(set(names.values())) == len(names)


def test_validate_label_file(tmp_path: Path) -> None:
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    image = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.int16), aff), image)
    good = np.zeros((8, 9, 10), np.int16)
    good[2:4, 2:4, 2:4] = 20
    good[5:7, 5:7, 5:7] = 101
    nib.save(nib.Nifti1Image(good, aff), tmp_path / "good.nii.gz")
    validate_label_file(tmp_path / "good.nii.gz", image)
    nib.save(nib.Nifti1Image(good[:, :, :5], aff), tmp_path / "short.nii.gz")
    with pytest.raises(ValueError, match="shape"):
        validate_label_file(tmp_path / "short.nii.gz", image)
    bad = good.copy()
    bad[0, 0, 0] = 60
    nib.save(nib.Nifti1Image(bad, aff), tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="not vertebra ids"):
        validate_label_file(tmp_path / "bad.nii.gz", image)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a label")
    with pytest.raises(ValueError, match="not a readable"):
        validate_label_file(tmp_path / "junk.nii.gz", image)
    (tmp_path / "raw.bin").write_bytes(bytes(8 * 9 * 10))
    validate_label_file(tmp_path / "raw.bin", image)
    (tmp_path / "raw2.bin").write_bytes(bytes(7))
    with pytest.raises(ValueError, match="bytes"):
        validate_label_file(tmp_path / "raw2.bin", image)


def test_model_versions_are_complete_and_numbered(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert latest_version(store) is None
    v1 = new_model_version(default_models_dir(), store, {}, {"task": "test"})
    v2 = new_model_version(v1, store, {"vbnet_fine": v1 / "vbnet_fine"}, {"task": "test"})
    assert (v1.name, v2.name) == ("v001", "v002") and latest_version(store) == v2
    info = json.loads((v2 / "MODEL_VERSION.json").read_text())
    assert info["parent_version"] == "v001" and info["retrained"] == ["vbnet_fine"]
    assert (v2 / "hu_rule.json").is_file() and not list(store.glob(".new-*"))
    load_models(v2)


def test_read_bmd_reference(tmp_path: Path) -> None:
    f = tmp_path / "ref.csv"
    f.write_text("image,bmd_L1,bmd_L2,kvp\n1.2.3,101.5,,120\n1.2.4,80,82,\n")
    ref = read_bmd_reference(f)
    assert ref["1.2.3"] == {"bmd": {"L1": 101.5}, "kvp": 120.0}
    assert ref["1.2.4"]["bmd"] == {"L1": 80.0, "L2": 82.0} and ref["1.2.4"]["kvp"] is None
    f.write_text("image,bmd_X9\n1.2.3,100\n")
    with pytest.raises(InputError, match="bmd_X9"):
        read_bmd_reference(f)
    f.write_text("image,bmd_L1\n1.2.3,lots\n")
    with pytest.raises(InputError, match="not a number"):
        read_bmd_reference(f)


def test_retrain_bmd_models_makes_a_usable_version(tmp_path: Path) -> None:
    from osteoscreen.synth.cohort import write_cohort
    from osteoscreen.synth.example import write_example

    small = {"spacing_xy": 1.5, "slice_spacing": 3.0}
    replay = write_cohort(
        tmp_path / "replay", 2, 11, "train", dicom_share=0.0, workers=1, progress=False, overrides=small
    )
    study = tmp_path / "study"
    write_example(study, seed=2024, spacing=(1.0, 3.0), nifti=True)
    truth = json.loads((study / "truth.json").read_text())
    case = LabelledCase("hospital1", study / "ct.nii.gz", study / "bodies.nii.gz", truth["bmd_mg_cm3"], 120.0)
    version = retrain_bmd_models(
        [case],
        default_models_dir(),
        tmp_path / "store",
        iterations=2,
        replay=replay,
        n_replay=2,
        progress=False,
    )
    info = json.loads((version / "MODEL_VERSION.json").read_text())
    assert info["reference_studies"] == ["hospital1"] and info["replay_cases"] == 2
    meta = json.loads((version / "densenet_regressor" / "configs" / "metadata.json").read_text())
    # The shipped regressor's kind (one network or an ensemble) is kept.
    n = ensemble_size(default_models_dir() / "densenet_regressor")
    assert meta["trained"]["iterations"] == (2 if n == 1 else [2] * n)
    assert meta["trained"]["cohort"]["initialised_from"]
    assert ensemble_size(version / "densenet_regressor") == n
    # The VB-Nets are the parent's, unchanged.
    parent = default_models_dir() / "vbnet_fine" / "models" / "model.ts"
    assert (version / "vbnet_fine" / "models" / "model.ts").read_bytes() == parent.read_bytes()
    load_models(version)


def test_retrain_keeps_an_ensemble_regressor_an_ensemble(tmp_path: Path) -> None:
    import shutil

    from osteoscreen.synth.example import write_example
    from osteoscreen.training.ensemble import build_ensemble

    # A models folder whose regressor is the mean of two networks (here two copies of the
    # shipped one): each member is fine-tuned from itself and the new version keeps the mean.
    base = tmp_path / "models"
    shutil.copytree(default_models_dir(), base)
    shipped = default_models_dir() / "densenet_regressor"
    if ensemble_size(shipped) == 1:
        build_ensemble([shipped, shipped], base / "densenet_regressor")
    study = tmp_path / "study"
    write_example(study, seed=2024, spacing=(1.0, 3.0), nifti=True)
    truth = json.loads((study / "truth.json").read_text())
    cases = [
        LabelledCase(f"hospital{k}", study / "ct.nii.gz", study / "bodies.nii.gz", truth["bmd_mg_cm3"], 120.0)
        for k in (1, 2)
    ]
    version = retrain_bmd_models(
        cases, base, tmp_path / "store", iterations=2, tasks=("regressor",), progress=False
    )
    meta = json.loads((version / "densenet_regressor" / "configs" / "metadata.json").read_text())
    assert ensemble_size(version / "densenet_regressor") == 2
    assert meta["trained"]["iterations"] == [2, 2]
    assert len(meta["trained"]["validation"]["members"]) == 2
    reg = load_models(version).regressor
    x = torch.zeros(1, 1 + len(reg.context_channels), *[int(v) for v in reg.inference["crop_size"]])
    with torch.inference_mode():
        assert torch.isfinite(reg.network(x)).all()
