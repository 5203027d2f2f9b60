"""DenseNet classifier and regressor (Huang et al., CVPR 2017) from monai.networks.nets.

A compact 3-D configuration: the crops are small (tens of voxels a side) and training runs
on CPUs; ``block_config`` and ``growth_rate`` are bundle settings, so a hospital with GPUs can
train a DenseNet-121 with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import DenseNet
from torch import nn

__all__ = ["CalibratedDenseNet", "MeanEnsemble", "make_calibrated_densenet", "make_densenet"]


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


class CalibratedDenseNet(nn.Module):
    """A DenseNet that calibrates the crop's own trabecular CT number instead of guessing BMD.

    The crop is centred on the trabecular ROI, so its central core (``core`` half-widths in
    voxels) is trabecular bone; its median CT number ``h`` is what a threshold tool would
    convert with one fixed line. Here a small head reads the DenseNet's description of the
    whole crop, the scan context (kVp, fat and muscle references: the constant channels after the first),
    ``h`` itself and the brightest soft spot in front of the body (``anterior_peak_hu``: the
    aorta, whose enhancement tells a contrast scan's phase), and predicts a per-scan
    correction of that line:

        bmd / 100 = (h / 100) * (slope + ds) + (intercept + di)

    ``slope`` and ``intercept`` start from the least-squares line of the training cohort and
    the correction layer starts at zero, so training begins at the linear HU rule and learns
    only what the image adds to it. A plain DenseNet must regress the bone's intensity from
    pixels; trained on 2 CPU cores, that was the first models' largest error (vertebra to
    vertebra scatter of 7 mg/cm3 within one scan on the synthetic test profile).

    The classifier (3 classes: normal, osteopenia, osteoporosis) turns the same calibrated
    BMD into ordinal logits around the two thresholds, with a learnt sharpness, and adds three
    free logits from the head.

    Args:
        task: "regressor" (output: BMD / 100) or "classifier" (output: class logits).
        norm_center, norm_scale: the crop normaliser (HU = x * norm_scale + norm_center).
        core: half-widths (voxels) of the central core whose median is ``h``.
        thresholds: (osteoporosis upper, normal lower) in mg/cm3.
        features: length of the DenseNet's description of the crop.
        crop_spacing: mm per crop voxel (A-P axis), anterior_mm / peak_voxels: see
            ``anterior_peak_hu``.
        densenet_args: the DenseNet's settings (see ``make_densenet``).
    """

    def __init__(
        self,
        task: str,
        *,
        in_channels: int = 1,
        norm_center: float = 100.0,
        norm_scale: float = 300.0,
        core: Sequence[int] = (3, 3, 2),
        thresholds: Sequence[float] = (80.0, 120.0),
        slope: float = 0.8,
        intercept: float = 0.0,
        features: int = 32,
        crop_spacing: float = 1.5,
        anterior_mm: float = 18.0,
        peak_voxels: int = 128,
        **densenet_args: object,
    ) -> None:
        super().__init__()
        if task not in ("regressor", "classifier"):
            raise ValueError(f"task must be 'regressor' or 'classifier', got {task!r}")
        self.is_classifier = task == "classifier"
        n_out = 5 if self.is_classifier else 2
        self.n_context = int(in_channels) - 1
        self.densenet = make_densenet(features, in_channels=in_channels, **densenet_args)  # type: ignore[arg-type]
        correction = nn.Linear(features, n_out)
        nn.init.zeros_(correction.weight)
        nn.init.zeros_(correction.bias)
        self.head = nn.Sequential(nn.Linear(features + self.n_context + 2, features), nn.ReLU(), correction)
        self.norm_center = float(norm_center)
        self.norm_scale = float(norm_scale)
        self.core = [int(c) for c in core]
        self.anterior_vox = int(round(anterior_mm / float(crop_spacing)))
        self.peak_voxels = int(peak_voxels)
        self.t_low = float(thresholds[0])
        self.t_high = float(thresholds[1])
        self.slope = nn.Parameter(torch.tensor(float(slope)))
        self.intercept = nn.Parameter(torch.tensor(float(intercept)))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(8.0)))

    def core_hu(self, x: torch.Tensor) -> torch.Tensor:
        """Median CT number of the central core of each crop, (N,)."""
        cx, cy, cz = x.shape[2] // 2, x.shape[3] // 2, x.shape[4] // 2
        hx, hy, hz = self.core[0], self.core[1], self.core[2]
        core = x[:, 0, cx - hx : cx + hx + 1, cy - hy : cy + hy + 1, cz - hz : cz + hz + 1]
        return core.reshape(x.shape[0], -1).median(dim=1).values * self.norm_scale + self.norm_center

    def anterior_peak_hu(self, x: torch.Tensor) -> torch.Tensor:
        """The brightest soft spot in front of the body (the aorta: contrast phase), (N,).

        Mean of the ``peak_voxels`` highest values of the 4.5 mm box-smoothed crop more than
        ``anterior_mm`` in front of the centre, clipped to the range of blood (-100 to 600 HU):
        native blood is near 40 HU, portal-venous near 150-200, arterial 250 and above. The
        DenseNet could in principle find the aorta itself; trained on 2 CPU cores it did not
        (validation error +11 mg/cm3 on contrast scans, -5 on native ones).
        """
        y0 = min(x.shape[3] // 2 + self.anterior_vox, x.shape[3] - 3)
        hu = x[:, 0:1, :, y0:, :] * self.norm_scale + self.norm_center
        smooth = torch.nn.functional.avg_pool3d(hu, kernel_size=3, stride=1)
        k = min(self.peak_voxels, smooth[0].numel())
        peak = smooth.reshape(x.shape[0], -1).topk(k, dim=1).values.mean(dim=1)
        return peak.clamp(-100.0, 600.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.core_hu(x) / 100.0
        context = x[:, 1:, 0, 0, 0]
        blood = self.anterior_peak_hu(x) / 100.0
        out = self.head(torch.cat([self.densenet(x), context, h[:, None], blood[:, None]], dim=1))
        bmd = h * (self.slope + out[:, 0]) + (self.intercept + out[:, 1])
        if not self.is_classifier:
            return bmd[:, None]
        b = bmd * 100.0
        t = torch.exp(self.log_temperature)
        ordinal = torch.stack([(b - self.t_high) / t, torch.zeros_like(b), (self.t_low - b) / t], dim=1)
        return ordinal + out[:, 2:5]


def make_calibrated_densenet(task: str, **kwargs: object) -> nn.Module:
    """``CalibratedDenseNet`` from a bundle's ``network_def``."""
    return CalibratedDenseNet(task, **kwargs)  # type: ignore[arg-type]


class MeanEnsemble(nn.Module):
    """The mean output of networks trained alike from other seeds (one TorchScript model).

    The members see the same input and must give outputs of one shape: for the regressor the
    ensemble's BMD is the members' mean BMD. Seeds differ in their initial weights and in the
    order and augmentation of their batches, so their errors are partly independent and the
    mean scatters less than any one of them. Saved as one ``model.ts``, it loads and runs
    wherever a single network does (the app, the MAP, MONAI Label).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x) for m in self.members]
        return torch.stack(outs, dim=0).mean(dim=0)
