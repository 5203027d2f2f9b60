from __future__ import annotations

import pytest

from osteoscreen.config import CATEGORIES, Thresholds
from osteoscreen.labels import VERTEBRAE, colour_of, id_to_name, is_lumbar, is_thoracic, name_to_id


@pytest.mark.parametrize(
    ("name", "vid"),
    [
        ("C1", 1),
        ("C7", 7),
        ("T1", 8),
        ("T12", 19),
        ("L1", 20),
        ("L5", 24),
        ("L6", 25),
        ("S1", 26),
        ("V1", 101),
        ("V12", 112),
    ],
)
def test_verse_ids_round_trip(name: str, vid: int) -> None:
    assert name_to_id(name) == vid
    assert id_to_name(vid) == name


def test_unknown_name_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean L1"):
        name_to_id("L1x")
    with pytest.raises(ValueError, match="not a vertebra id"):
        id_to_name(0)


def test_colours_distinct_for_neighbours() -> None:
    for vid in range(1, 26):
        assert colour_of(vid) != colour_of(vid + 1)
    assert len(VERTEBRAE) == 26
    assert is_thoracic(19) and is_lumbar(20) and not is_lumbar(19)


def test_thresholds_acr_inclusive() -> None:
    t = Thresholds()
    assert t.categorize(79.9) == "osteoporosis"
    assert t.categorize(80.0) == "osteopenia"
    assert t.categorize(120.0) == "osteopenia"
    assert t.categorize(120.1) == "normal"
    assert CATEGORIES[t.class_index(50)] == "osteoporosis"


def test_thresholds_exclusive_variant() -> None:
    t = Thresholds(boundaries_are_osteopenia=False)
    assert t.categorize(80.0) == "osteoporosis"
    assert t.categorize(120.0) == "normal"
    with pytest.raises(ValueError, match="osteoporosis_upper"):
        Thresholds(osteoporosis_upper=130.0)
