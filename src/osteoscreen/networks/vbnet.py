"""VB-Net: a V-Net whose convolutions are bottleneck residual blocks.

Milletari F. et al., "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
Segmentation", 3DV 2016; the bottleneck variant as used for vertebra segmentation by
Peng et al., Osteoporosis International 2023 (see METHOD.md): every 3x3x3 convolution of the
V-Net stages becomes 1x1x1 reduce -> 3x3x3 -> 1x1x1 expand with a residual connection,
which makes the network smaller and faster at the same width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VBNet"]


def _norm(channels: int) -> nn.Module:
    # Instance norm: batch sizes are tiny in 3-D training and inference runs one volume.
    return nn.InstanceNorm3d(channels, affine=True)


class _Bottleneck(nn.Module):
    """1x1x1 reduce -> 3x3x3 -> 1x1x1 expand, plus the identity."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = max(channels // reduction, 4)
        self.body = nn.Sequential(
            nn.Conv3d(channels, mid, 1, bias=False),
            _norm(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, mid, 3, padding=1, bias=False),
            _norm(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, channels, 1, bias=False),
            _norm(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class _DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, dropout: float) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 2, stride=2, bias=False),
            _norm(out_channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[_Bottleneck(out_channels) for _ in range(n_blocks)])
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.blocks(self.drop(x))


class _UpBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, n_blocks: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, bias=False),
            _norm(out_channels),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Conv3d(out_channels + skip_channels, out_channels, 1, bias=False),
            _norm(out_channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[_Bottleneck(out_channels) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        x = self.fuse(torch.cat([x, skip], dim=1))
        return self.blocks(x)


class VBNet(nn.Module):
    """V-Net with bottleneck residual blocks.

    Args:
        spatial_dims: must be 3.
        in_channels: input channels (1 for CT).
        out_channels: classes, background included.
        channels: features per resolution level, finest first; each level halves the size.
        blocks: bottleneck blocks per down level (len(channels) - 1 entries).
        dropout: 3-D dropout in the deepest two levels.

    Input sizes must be divisible by ``2 ** (len(channels) - 1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 6,
        channels: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] = (1, 2, 2),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"spatial_dims must be 3, got {spatial_dims}")
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {tuple(channels)}")
        if len(blocks) != len(channels) - 1:
            raise ValueError(
                f"blocks needs {len(channels) - 1} entries for channels {tuple(channels)}, "
                f"got {tuple(blocks)}"
            )
        if in_channels < 1 or out_channels < 2:
            raise ValueError(
                f"in_channels must be >= 1 and out_channels >= 2, got {in_channels}, {out_channels}"
            )
        self.divisor = 2 ** (len(channels) - 1)
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, channels[0], 3, padding=1, bias=False),
            _norm(channels[0]),
            nn.ReLU(inplace=True),
            _Bottleneck(channels[0]),
        )
        n = len(channels)
        self.downs = nn.ModuleList(
            [
                _DownBlock(channels[i], channels[i + 1], blocks[i], dropout if i >= n - 3 else 0.0)
                for i in range(n - 1)
            ]
        )
        self.ups = nn.ModuleList(
            [
                _UpBlock(channels[i + 1], channels[i], channels[i], max(blocks[i] - 1, 1))
                for i in reversed(range(n - 1))
            ]
        )
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips: list[torch.Tensor] = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
