"""The regressor ensemble: one TorchScript model that is the mean of its members."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from osteoscreen.cli import main
from osteoscreen.models import load_models
from osteoscreen.networks import CalibratedDenseNet, MeanEnsemble
from osteoscreen.training.common import TrainState, ensemble_size, export_bundle, load_init_weights
from osteoscreen.training.ensemble import build_ensemble
from osteoscreen.transforms import CropSpec

NET = {
    "task": "regressor",
    "in_channels": 3,
    "core": [3, 3, 2],
    "init_features": 4,
    "growth_rate": 4,
    "block_config": [1, 1],
}
SPEC = CropSpec(crop_size=(16, 16, 12), spacing=(1.5, 1.5, 1.5))


def _member(folder: Path, seed: int, channels: list[str] | None = None) -> Path:
    torch.manual_seed(seed)
    model = CalibratedDenseNet(**NET)  # type: ignore[arg-type]
    with torch.no_grad():
        # A trained head is not zero: give each member its own correction.
        for p in model.head.parameters():
            p.normal_(0.0, 0.1)
    state = TrainState(iteration=20, best_iteration=20, best_metrics={"mae": 5.0 + seed})
    export_bundle(
        folder,
        model,
        name="densenet_regressor",
        description="test regressor",
        network={"_target_": "osteoscreen.networks.make_calibrated_densenet", **NET},
        inference={
            **SPEC.to_dict(),
            "context": {"channels": channels or ["kvp", "fat_hu"], "default_kvp": 120.0},
            "output": {"bmd_scale": 100.0, "unit": "mg/cm3"},
        },
        state=state,
        cohort={"n_cases": 1},
        example_input=torch.zeros(2, 3, *SPEC.crop_size),
        extra={"training_seed": seed, "split_seed": 0},
    )
    return folder


def test_ensemble_is_the_mean_of_its_members(tmp_path: Path) -> None:
    a = _member(tmp_path / "a" / "densenet_regressor", 0)
    b = _member(tmp_path / "b" / "densenet_regressor", 1)
    out = tmp_path / "ens" / "densenet_regressor"
    assert build_ensemble([a, b], out) == {}
    x = torch.randn(4, 3, *SPEC.crop_size)
    with torch.no_grad():
        ya = torch.jit.load(str(a / "models" / "model.ts"))(x)
        yb = torch.jit.load(str(b / "models" / "model.ts"))(x)
        ye = torch.jit.load(str(out / "models" / "model.ts"))(x)
    assert not torch.allclose(ya, yb)
    torch.testing.assert_close(ye, (ya + yb) / 2)
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert [m["training_seed"] for m in meta["trained"]["ensemble"]] == [0, 1]
    assert meta["trained"]["iterations"] == [20, 20]
    inference = json.loads((out / "configs" / "inference.json").read_text())
    # The pipeline reads the core's half-widths and the channels from the same places as before.
    assert inference["network_def"]["core"] == [3, 3, 2]
    assert inference["network_def"]["ensemble"] == {"members": 2, "combine": "mean"}
    assert inference["context"]["channels"] == ["kvp", "fat_hu"]


def test_ensemble_refuses_members_that_read_other_inputs(tmp_path: Path) -> None:
    a = _member(tmp_path / "a" / "densenet_regressor", 0)
    b = _member(tmp_path / "b" / "densenet_regressor", 1, channels=["kvp", "muscle_hu"])
    with pytest.raises(ValueError, match="differs"):
        build_ensemble([a, b], tmp_path / "ens")
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble([a], tmp_path / "ens")
    out = tmp_path / "ens" / "densenet_regressor"
    build_ensemble([a, a], out)
    with pytest.raises(ValueError, match="not a single"):
        build_ensemble([out, a], tmp_path / "ens2")
    assert not (tmp_path / "ens2").exists()


def test_fine_tuning_starts_from_the_chosen_member_of_an_ensemble(tmp_path: Path) -> None:
    a = _member(tmp_path / "a" / "densenet_regressor", 0)
    b = _member(tmp_path / "b" / "densenet_regressor", 1)
    out = tmp_path / "ens" / "densenet_regressor"
    build_ensemble([a, b], out)
    net = CalibratedDenseNet(**NET)  # type: ignore[arg-type]
    info = load_init_weights(net, out)
    assert info["initialised_from_member"] == "0 of 2"
    first = torch.jit.load(str(a / "models" / "model.ts")).state_dict()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, first[k])
    assert load_init_weights(net, out, member=1)["initialised_from_member"] == "1 of 2"
    second = torch.jit.load(str(b / "models" / "model.ts")).state_dict()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, second[k])
    with pytest.raises(ValueError, match="no member 2"):
        load_init_weights(net, out, member=2)
    assert ensemble_size(out) == 2 and ensemble_size(a) == 1


def test_cli_ensemble_says_what_is_wrong_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _member(tmp_path / "a" / "densenet_regressor", 0)
    assert (
        main(["ensemble", "--members", str(a), str(tmp_path / "nothing"), "--out", str(tmp_path / "e")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a bundle" in err
    assert main(["ensemble", "--members", str(a), str(a), "--out", str(tmp_path / "e" / "r")]) == 0
    assert (tmp_path / "e" / "r" / "models" / "model.ts").is_file()


def test_mean_ensemble_needs_a_member() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MeanEnsemble([])


def test_shipped_regressor_loads_and_runs() -> None:
    models = load_models()
    reg = models.regressor
    x = torch.zeros(2, 1 + len(reg.context_channels), *[int(v) for v in reg.inference["crop_size"]])
    with torch.inference_mode():
        y = reg.network(x)
    assert y.shape == (2, 1) and torch.isfinite(y).all()
    members = reg.inference["network_def"].get("ensemble", {}).get("members", 1)
    assert members == len(reg.metadata["trained"].get("ensemble", [None]))
