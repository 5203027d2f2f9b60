from __future__ import annotations

import io

import pytest
import torch

from osteoscreen.networks import VBNet, make_densenet


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


def test_vbnet_learns_a_blob() -> None:
    """A few steps on one image must lower the loss: the network is trainable end to end."""
    torch.manual_seed(0)
    net = VBNet(out_channels=2, channels=(4, 8), blocks=(1,))
    x = torch.zeros(1, 1, 16, 16, 16)
    x[..., 4:12, 4:12, 4:12] = 1.0
    y = (x[:, 0] > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
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
