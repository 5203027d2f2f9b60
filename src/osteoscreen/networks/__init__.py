"""Networks: the VB-Net segmenter and the DenseNet classifier / regressor."""

from __future__ import annotations

from .densenet import CalibratedDenseNet, MeanEnsemble, make_calibrated_densenet, make_densenet
from .vbnet import VBNet

__all__ = ["CalibratedDenseNet", "MeanEnsemble", "VBNet", "make_calibrated_densenet", "make_densenet"]
