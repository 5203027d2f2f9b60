"""Networks: the VB-Net segmenter and the DenseNet classifier / regressor."""

from __future__ import annotations

from .densenet import make_densenet
from .vbnet import VBNet

__all__ = ["VBNet", "make_densenet"]
