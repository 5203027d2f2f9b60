"""The single source of truth for vertebra labels: ids, names, colours and segmenter classes.

Vertebra ids follow the VerSe convention (Sekuboyina et al. 2021): C1-C7 = 1-7,
T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25, sacrum = 26. Vertebral bodies whose level could
not be determined are numbered 101, 102, ... from top to bottom and named V1, V2, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "UNKNOWN_LEVEL_BASE",
    "VERTEBRAE",
    "SegClass",
    "Vertebra",
    "colour_of",
    "id_to_name",
    "is_lumbar",
    "is_thoracic",
    "name_to_id",
]

UNKNOWN_LEVEL_BASE = 100


class SegClass(IntEnum):
    """Output channels of the VB-Net segmenter (tissue classes, not levels)."""

    BACKGROUND = 0
    BODY = 1  # vertebral body (cortex and trabecular bone)
    DISC = 2  # intervertebral disc: keeps neighbouring bodies apart
    POSTERIOR = 3  # pedicles, laminae, spinous and transverse processes
    RIB = 4
    SACRUM = 5


@dataclass(frozen=True)
class Vertebra:
    """One vertebral level."""

    id: int
    name: str
    colour: tuple[int, int, int]


def _build() -> dict[int, Vertebra]:
    names = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    names += [f"L{i}" for i in range(1, 7)] + ["S1"]
    out: dict[int, Vertebra] = {}
    for i, name in enumerate(names, start=1):
        # A hue wheel that makes neighbouring levels clearly different in a viewer.
        hue = (i * 0.381966) % 1.0
        out[i] = Vertebra(i, name, _hsv_to_rgb(hue, 0.75, 0.95))
    return out


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return int(r * 255), int(g * 255), int(b * 255)


VERTEBRAE: dict[int, Vertebra] = _build()
_BY_NAME = {v.name: v.id for v in VERTEBRAE.values()}


def id_to_name(label_id: int) -> str:
    """Name of a label id: "L1" for 20, "V2" for 102.

    Raises:
        ValueError: if the id is neither a VerSe level nor an unknown-level instance.
    """
    if label_id in VERTEBRAE:
        return VERTEBRAE[label_id].name
    if label_id > UNKNOWN_LEVEL_BASE:
        return f"V{label_id - UNKNOWN_LEVEL_BASE}"
    raise ValueError(f"label_id {label_id} is not a vertebra id (1-26, or 101+ for unknown levels)")


def name_to_id(name: str) -> int:
    """Label id of a level name ("L1" -> 20, "V2" -> 102).

    Raises:
        ValueError: for an unknown name, with the closest valid names.
    """
    key = name.strip().upper()
    if key in _BY_NAME:
        return _BY_NAME[key]
    if key.startswith("V") and key[1:].isdigit() and int(key[1:]) > 0:
        return UNKNOWN_LEVEL_BASE + int(key[1:])
    import difflib

    close = difflib.get_close_matches(key, list(_BY_NAME), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown vertebra name {name!r}{hint}")


def colour_of(label_id: int) -> tuple[int, int, int]:
    """Display colour (RGB 0-255) of a label id."""
    if label_id in VERTEBRAE:
        return VERTEBRAE[label_id].colour
    return _hsv_to_rgb(((label_id - UNKNOWN_LEVEL_BASE) * 0.381966) % 1.0, 0.4, 0.9)


def is_thoracic(label_id: int) -> bool:
    return 8 <= label_id <= 19


def is_lumbar(label_id: int) -> bool:
    return 20 <= label_id <= 25
