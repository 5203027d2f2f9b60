"""Body / posterior / disc targets from whole-vertebra labels (training on real VerSe CTs)."""

from __future__ import annotations

import numpy as np

from osteoscreen.labels import SegClass
from osteoscreen.training.real import body_from_vertebra, classes_from_whole_vertebrae


def _vertebra(shape: tuple[int, int, int], z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1 mm phantom (RAS: +y anterior): a cylindrical body whose back wall is the front of
    the canal, a ring-shaped arch around the canal, a spinous process behind it.
    Returns (whole vertebra, body)."""
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    slab = (z >= z0) & (z < z1)
    body = ((x - 40) ** 2 + (y - 53) ** 2 <= 15**2) & slab
    ring = (((x - 40) ** 2 + (y - 30) ** 2) <= 11**2) & (((x - 40) ** 2 + (y - 30) ** 2) > 7**2)
    arch = ring & (y <= 37) & slab & (z >= z0 + 3) & (z < z1 - 3)
    spinous = (np.abs(x - 40) <= 2) & (y >= 8) & (y < 21) & slab & (z >= z0 + 3) & (z < z1 - 3)
    return body | arch | spinous, body


def test_body_is_the_part_in_front_of_the_canal() -> None:
    whole, body = _vertebra((80, 80, 40), 5, 33)
    got = body_from_vertebra(whole, (1.0, 1.0, 1.0))
    dice = 2 * (got & body).sum() / (got.sum() + body.sum())
    assert dice > 0.9
    arch = whole & ~body
    assert (got & arch).sum() < 0.1 * arch.sum()


def test_discs_between_consecutive_bodies_and_posterior_elements() -> None:
    shape = (80, 80, 80)
    labels = np.zeros(shape, np.int16)
    upper, _ = _vertebra(shape, 45, 72)  # higher k is superior (RAS)
    lower, _ = _vertebra(shape, 8, 36)
    labels[upper] = 20  # L1
    labels[lower] = 21  # L2
    classes, bodies, span = classes_from_whole_vertebrae(labels, (1.0, 1.0, 1.0))
    assert span == (8, 72)
    assert set(np.unique(bodies)) == {0, 20, 21}
    disc = classes == SegClass.DISC
    ks = np.where(disc.any(axis=(0, 1)))[0]
    assert ks.min() >= 36 and ks.max() < 45  # between L2's top and L1's bottom
    assert disc.sum() > 0.5 * np.pi * 14**2 * 9  # most of the footprint, over the whole gap
    assert (classes[labels > 0] != SegClass.DISC).all()
    assert (classes == SegClass.POSTERIOR).sum() > 0
    # Pseudo-labels: a rib the segmenter saw stays; its bodies inside the span are replaced.
    base = np.zeros(shape, np.uint8)
    base[70:75, 30:35, 50:55] = SegClass.RIB
    base[5:8, 5:8, 50:55] = SegClass.BODY
    classes2, _, _ = classes_from_whole_vertebrae(labels, (1.0, 1.0, 1.0), base)
    assert (classes2[70:75, 30:35, 50:55] == SegClass.RIB).all()
    assert (classes2[5:8, 5:8, 50:55] == SegClass.BACKGROUND).all()
