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


def test_segmenter_augmentation_dims_labelled_bone_in_some_patches() -> None:
    """Osteoporotic bone (cortex included) is dimmed towards water in about 30 % of patches;
    the unlabelled rest only gets the scanner's gain and offset."""
    from osteoscreen.training.segmenter import _augment

    rng = np.random.default_rng(0)
    img = np.zeros((16, 16, 16), np.float32)
    lab = np.zeros((16, 16, 16), np.uint8)
    img[4:12, 4:12, 4:12] = 1000.0
    lab[4:12, 4:12, 4:12] = SegClass.BODY
    ratios = []
    for _ in range(400):
        out = _augment(img, rng, lab)
        water = float(out[lab == 0].mean())
        ratios.append((float(out[lab > 0].mean()) - water) / 1000.0)
    dimmed = np.mean(np.array(ratios) < 0.85)
    assert 0.15 < dimmed < 0.45
    assert min(ratios) > 0.25 and max(ratios) < 1.12
