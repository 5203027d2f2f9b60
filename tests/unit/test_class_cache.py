"""The class cache of ``evaluate --class-cache``: round trip, other grids, other segmenters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osteoscreen.errors import InputError
from osteoscreen.segmentation.cache import ClassCache, segmenter_fingerprint
from osteoscreen.segmentation.classical import SpineColumn
from osteoscreen.segmentation.inference import SegmentationOutput


def _output(with_column: bool) -> SegmentationOutput:
    rng = np.random.default_rng(0)
    classes = np.zeros((40, 30, 20), dtype=np.uint8)
    box = [(5, 25), (3, 28), (0, 20)]
    classes[5:25, 3:28, :] = rng.integers(0, 7, size=(20, 25, 20), dtype=np.uint8)
    column = None
    if with_column:
        column = SpineColumn(np.arange(2, 18), rng.normal(15, 1, size=(16, 2)), (0.8, 0.8, 2.5))
    return SegmentationOutput(classes, box, ["a warning"], column)


@pytest.mark.parametrize("with_column", [True, False])
def test_a_class_map_comes_back_as_it_was_stored(tmp_path: Path, with_column: bool) -> None:
    cache = ClassCache(tmp_path / "c", "abc")
    seg = _output(with_column)
    assert cache.load("case-1", seg.classes.shape) is None
    cache.save("case-1", seg)
    back = cache.load("case-1", seg.classes.shape)
    assert back is not None
    assert np.array_equal(back.classes, seg.classes) and back.classes.dtype == np.uint8
    assert back.box == seg.box and back.warnings == seg.warnings
    if with_column:
        assert back.column is not None and seg.column is not None
        assert np.array_equal(back.column.k, seg.column.k) and np.allclose(back.column.ij, seg.column.ij)
        assert back.column.spacing == seg.column.spacing
    else:
        assert back.column is None
    # A case read on another grid (a changed loader) is segmented again, not mis-placed.
    assert cache.load("case-1", (40, 30, 21)) is None
    assert not list((tmp_path / "c").glob(".*.tmp"))
    # A damaged file is a miss (the case is segmented again and the file rewritten).
    cache.path("case-1").write_bytes(b"not a zip file")
    assert cache.load("case-1", seg.classes.shape) is None


def test_another_segmenters_folder_is_refused(tmp_path: Path) -> None:
    ClassCache(tmp_path / "c", "abc")
    assert json.loads((tmp_path / "c" / "segmenter.json").read_text())["fingerprint"] == "abc"
    ClassCache(tmp_path / "c", "abc")  # the same segmenter: fine
    with pytest.raises(InputError, match="other VB-Net weights"):
        ClassCache(tmp_path / "c", "def")


def test_the_fingerprint_follows_the_segmenter_weights(tmp_path: Path) -> None:
    for name in ("vbnet_coarse", "vbnet_fine"):
        (tmp_path / name / "models").mkdir(parents=True)
        (tmp_path / name / "configs").mkdir()
        (tmp_path / name / "models" / "model.ts").write_bytes(b"weights " + name.encode())
        (tmp_path / name / "configs" / "inference.json").write_text("{}")
    first = segmenter_fingerprint(tmp_path)
    assert segmenter_fingerprint(tmp_path) == first
    (tmp_path / "vbnet_fine" / "models" / "model.ts").write_bytes(b"retrained")
    assert segmenter_fingerprint(tmp_path) != first
    (tmp_path / "vbnet_coarse" / "models" / "model.ts").unlink()
    with pytest.raises(InputError, match="vbnet_coarse not found"):
        segmenter_fingerprint(tmp_path)
