from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteoscreen.labels import SegClass
from osteoscreen.networks import VBNet
from osteoscreen.training.common import load_init_weights
from osteoscreen.training.segmenter import FINE, _random_patch


def test_patches_find_a_rare_class() -> None:
    # A sacrum in one corner of a large volume: centring on it puts it in every patch.
    img = np.zeros((100, 100, 100), dtype=np.float32)
    lab = np.zeros((100, 100, 100), dtype=np.uint8)
    lab[40:60, 40:60, 40:60] = SegClass.BODY
    lab[85:95, 5:15, 0:8] = SegClass.SACRUM
    rng = np.random.default_rng(0)
    hits = [
        (
            _random_patch(img, lab, (32, 32, 32), rng, fg_prob=1.0, centre_classes={SegClass.SACRUM: 1.0})[1]
            == SegClass.SACRUM
        ).any()
        for _ in range(20)
    ]
    assert all(hits)
    # Body-only centring (the default) rarely sees it.
    body_only = [
        (_random_patch(img, lab, (32, 32, 32), rng, fg_prob=1.0)[1] == SegClass.SACRUM).any()
        for _ in range(20)
    ]
    assert sum(body_only) < 5


def test_init_from_needs_the_same_architecture(tmp_path: Path) -> None:
    models = Path(__file__).resolve().parents[2] / "models" / "vbnet_fine"
    if not (models / "models" / "model.ts").is_file():
        pytest.skip("no shipped vbnet_fine bundle in this checkout")
    net = VBNet(out_channels=len(SegClass), channels=FINE.channels, blocks=FINE.blocks)
    info = load_init_weights(net, models)
    assert info["initialised_from"].endswith("vbnet_fine")
    other = VBNet(out_channels=len(SegClass), channels=(4, 8, 16, 32), blocks=FINE.blocks)
    with pytest.raises(ValueError, match="same architecture"):
        load_init_weights(other, models)
    with pytest.raises(ValueError, match="no model"):
        load_init_weights(net, tmp_path)
