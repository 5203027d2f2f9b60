"""DenseNet classifier and regressor (Huang et al., CVPR 2017) from monai.networks.nets.

A compact 3-D configuration: the crops are small (tens of voxels a side) and training runs
on CPUs; ``block_config`` and ``growth_rate`` are bundle settings, so a hospital with GPUs can
train a DenseNet-121 with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import DenseNet
from torch import nn

__all__ = ["make_densenet"]


def make_densenet(
    out_channels: int,
    *,
    in_channels: int = 1,
    init_features: int = 16,
    growth_rate: int = 12,
    block_config: Sequence[int] = (3, 4, 6),
    bn_size: int = 2,
    dropout_prob: float = 0.1,
) -> nn.Module:
    """A 3-D DenseNet: 3 outputs for the classifier, 1 for the regressor."""
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}")
    return DenseNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        init_features=init_features,
        growth_rate=growth_rate,
        block_config=tuple(block_config),
        bn_size=bn_size,
        dropout_prob=dropout_prob,
    )
