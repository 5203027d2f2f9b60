from __future__ import annotations

import io

import pytest
import torch

from osteoscreen.networks import CalibratedDenseNet, VBNet, make_densenet


@pytest.mark.parametrize(
    ("channels", "blocks", "size", "out"),
    [
        ((8, 16, 32, 64), (1, 1, 1), (16, 24, 32), 6),
        ((4, 8), (2,), (8, 8, 6), 2),
        ((8, 16, 32), (1, 2), (12, 16, 20), 3),
    ],
)
def test_vbnet_shapes(
    channels: tuple[int, ...], blocks: tuple[int, ...], size: tuple[int, int, int], out: int
) -> None:
    net = VBNet(out_channels=out, channels=channels, blocks=blocks).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, out, *size)


def test_vbnet_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="blocks needs 2 entries"):
        VBNet(channels=(8, 16, 32), blocks=(1,))
    with pytest.raises(ValueError, match="spatial_dims"):
        VBNet(spatial_dims=2)


def test_vbnet_torchscript_round_trip() -> None:
    net = VBNet(out_channels=3, channels=(4, 8, 16), blocks=(1, 1)).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x), atol=1e-5)


def _fit(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, steps: int, lr: float
) -> list[float]:
    # Adam on one fixed batch; the losses of every step.
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_vbnet_learns_a_blob() -> None:
    """A few steps on one image must lower the loss: the network is trainable end to end."""
    torch.manual_seed(0)
    net = VBNet(out_channels=2, channels=(4, 8), blocks=(1,))
    x = torch.zeros(1, 1, 16, 16, 16)
    x[..., 4:12, 4:12, 4:12] = 1.0
    y = (x[:, 0] > 0.5).long()
    losses = _fit(net, x, y, torch.nn.functional.cross_entropy, steps=15, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("out", [1, 3])
def test_densenet_shapes_and_script(out: int) -> None:
    net = make_densenet(out, init_features=8, growth_rate=4, block_config=(2, 2)).eval()
    x = torch.randn(2, 1, 16, 16, 8)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, out)
        assert torch.allclose(torch.jit.script(net)(x), y, atol=1e-5)
    with pytest.raises(ValueError):
        make_densenet(0)


def _core_crops(core_hu: list[float], center: float = 100.0, scale: float = 300.0) -> torch.Tensor:
    # Crops of soft tissue (40 HU) whose central 7 x 7 x 5 core holds the given CT numbers.
    x = torch.full((len(core_hu), 1, 16, 16, 10), (40.0 - center) / scale)
    for i, h in enumerate(core_hu):
        x[i, 0, 5:12, 5:12, 3:8] = (h - center) / scale
    return x


def test_calibrated_densenet_starts_at_its_hu_line() -> None:
    net = CalibratedDenseNet(
        "regressor", init_features=8, growth_rate=4, block_config=(2, 2), slope=0.8, intercept=-0.04
    ).eval()
    x = _core_crops([50.0, 150.0, 300.0])
    # A bright speck in the core (a bone island voxel) does not move the median.
    x[0, 0, 8, 8, 5] = 2.0
    with torch.no_grad():
        y = net(x)[:, 0] * 100.0
        assert torch.allclose(y, torch.tensor([36.0, 116.0, 236.0]), atol=1e-3)
        assert torch.allclose(torch.jit.script(net)(x)[:, 0] * 100.0, y, atol=1e-4)


def test_calibrated_classifier_orders_its_logits_by_the_thresholds() -> None:
    net = CalibratedDenseNet(
        "classifier", init_features=8, growth_rate=4, block_config=(2, 2), slope=1.0, intercept=0.0
    ).eval()
    with torch.no_grad():
        prob = torch.softmax(net(_core_crops([40.0, 100.0, 180.0])), dim=1)
    # Class order: normal, osteopenia, osteoporosis.
    assert prob.argmax(dim=1).tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="task"):
        CalibratedDenseNet("segmenter")


def test_calibrated_densenet_learns_a_scan_dependent_slope() -> None:
    # The same core CT number means another BMD when a context channel says so (as kVp does).
    torch.manual_seed(0)
    net = CalibratedDenseNet(
        "regressor", in_channels=2, init_features=8, growth_rate=4, block_config=(2, 2), slope=1.0
    )
    hu = torch.rand(32) * 250.0
    kv = (torch.rand(32) > 0.5).float()
    x = torch.cat([_core_crops(hu.tolist()), kv.view(-1, 1, 1, 1, 1).expand(-1, 1, 16, 16, 10)], dim=1)
    y = (hu * torch.where(kv > 0, 0.7, 1.0) / 100.0)[:, None]
    losses = _fit(net, x, y, torch.nn.functional.mse_loss, steps=60, lr=3e-3)
    assert losses[-1] < 0.2 * losses[0]


def test_anterior_peak_reads_the_aorta_in_front_of_the_body_only() -> None:
    net = CalibratedDenseNet("regressor", init_features=8, growth_rate=4, block_config=(2, 2)).eval()
    x = torch.full((3, 1, 16, 64, 10), (40.0 - 100.0) / 300.0)  # 64 voxels A-P (96 mm)
    x[:, 0, 5:12, 29:36, 3:8] = (150.0 - 100.0) / 300.0  # the trabecular core
    blood = (250.0 - 100.0) / 300.0
    x[1, 0, 2:14, 48:60, 1:9] = blood  # 24-42 mm in front of the centre: the aorta
    x[2, 0, 2:14, 4:16, 1:9] = blood  # as far behind it: not the aorta
    peak = net.anterior_peak_hu(x)
    assert peak[0] == pytest.approx(40.0, abs=1.0)
    assert peak[1] == pytest.approx(250.0, abs=1.0)
    assert peak[2] == pytest.approx(40.0, abs=1.0)


def test_network_input_gives_each_bundle_the_channels_it_was_trained_with() -> None:
    from pathlib import Path

    from osteoscreen.bmd.predict import network_input
    from osteoscreen.models import Bundle
    from osteoscreen.transforms import CONTEXT_CHANNELS_V2, ScanContext

    def bundle(context: object) -> Bundle:
        return Bundle("b", Path("."), None, {"context": context} if context else {}, {})  # type: ignore[arg-type]

    crops = torch.zeros(2, 1, 4, 4, 4)
    ctx = ScanContext(kvp=120.0, fat_hu=-100.0, kvp_known=True, muscle_hu=60.0)
    assert network_input(bundle(None), crops, ctx).shape[1] == 1  # a bundle without context
    first = network_input(bundle({"channels": ["kvp", "fat_hu", "fat_reference_used"]}), crops, ctx)
    assert first.shape[1] == 4
    both = network_input(bundle({"channels": list(CONTEXT_CHANNELS_V2)}), crops, ctx)
    assert both.shape[1] == 6 and torch.all(both[:, 4] == 0.5) and torch.all(both[:, 5] == 1.0)
