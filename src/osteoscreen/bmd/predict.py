"""DenseNet BMD regression and category classification on crops around each ROI centre."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import CATEGORIES
from ..io.volume import Volume
from ..models import Bundle
from ..transforms import CropSpec, ScanContext, context_channels, extract_crop

__all__ = ["core_hu", "network_input", "predict_bmd"]


def network_input(bundle: Bundle, crops: torch.Tensor, context: ScanContext | None) -> torch.Tensor:
    """The crops as the bundle expects them: with the scan context channels where it takes them."""
    channels = bundle.context_channels
    if not channels:
        return crops
    return context_channels(crops, context if context is not None else ScanContext(), channels)


def predict_bmd(
    volume: Volume,
    centres_mm: Sequence[tuple[float, float, float]],
    classifier: Bundle,
    regressor: Bundle,
    context: ScanContext | None = None,
) -> tuple[list[float], list[dict[str, float]]]:
    """BMD (mg/cm3) and class probabilities for each ROI centre (RAS mm) of ``volume``."""
    if not centres_mm:
        return [], []
    r_spec = CropSpec.from_dict(regressor.inference)
    c_spec = CropSpec.from_dict(classifier.inference)
    scale = float(regressor.inference.get("output", {}).get("bmd_scale", 100.0))
    classes = classifier.inference.get("output", {}).get("classes", list(CATEGORIES))
    xr = torch.stack([extract_crop(volume.array, volume.affine, c, r_spec) for c in centres_mm])
    xc = (
        xr
        if c_spec == r_spec
        else torch.stack([extract_crop(volume.array, volume.affine, c, c_spec) for c in centres_mm])
    )
    with torch.inference_mode():
        bmd = (regressor.network(network_input(regressor, xr, context))[:, 0] * scale).tolist()
        prob = torch.softmax(classifier.network(network_input(classifier, xc, context)), dim=1).numpy()
    probs = [{str(k): float(p[i]) for i, k in enumerate(classes)} for p in prob]
    return [float(b) for b in bmd], probs


def core_hu(volume: Volume, centres_mm: Sequence[tuple[float, float, float]], bundle: Bundle) -> list[float]:
    """Median CT number of the crop's central core at each centre, where the calibrated
    DenseNets read the bone (``network_def.core`` half-widths); NaN for other bundles."""
    net = bundle.inference.get("network_def", {})
    core = net.get("core") if isinstance(net, dict) else None
    if not core or not centres_mm:
        return [float("nan")] * len(centres_mm)
    spec = CropSpec.from_dict(bundle.inference)
    small = CropSpec(
        crop_size=(2 * int(core[0]) + 1, 2 * int(core[1]) + 1, 2 * int(core[2]) + 1),
        spacing=spec.spacing,
        norm_center=0.0,
        norm_scale=1.0,
        clip=(-1024.0, 3071.0),
    )
    return [float(extract_crop(volume.array, volume.affine, c, small).median()) for c in centres_mm]
