"""A folder of the segmenter's tissue-class maps, one file per case.

``osteoscreen evaluate --class-cache DIR`` writes each case's class map (the VB-Nets' arg-max,
before bodies are split, refined and named) the first time and reads it on later runs, so a
change of the post-processing (``find_bodies``, ``refine_bodies``, ``assign_levels``) is
measured on a whole cohort without running the networks again. The folder belongs to one
segmenter: ``segmenter.json`` holds a fingerprint of the two VB-Net bundles, and a folder made by
other weights is refused rather than silently mixed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from .classical import SpineColumn
from .inference import SegmentationOutput

__all__ = ["ClassCache", "segmenter_fingerprint"]

log = logging.getLogger(__name__)

#: The bundles whose output the cache holds (the DenseNets do not change a class map).
_SEGMENTER_BUNDLES = ("vbnet_coarse", "vbnet_fine")
_FORMAT = 1


def segmenter_fingerprint(models_dir: Path) -> str:
    """SHA-256 over the VB-Net weights and inference configs in ``models_dir``."""
    h = hashlib.sha256()
    for name in _SEGMENTER_BUNDLES:
        for rel in ("models/model.ts", "configs/inference.json"):
            path = Path(models_dir) / name / rel
            if not path.is_file():
                raise InputError(
                    f"model {name} not found: expected {path} (run `make models` or pass --models DIR)"
                )
            h.update(rel.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class ClassCache:
    """Per-case class maps in ``folder``, made by the segmenter with ``fingerprint``.

    Raises:
        InputError: ``folder`` holds class maps of another segmenter, or is not a folder.
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"class cache {self.folder} is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "segmenter.json"
        if stamp.is_file():
            try:
                earlier = json.loads(stamp.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"class cache {self.folder}: unreadable segmenter.json ({exc})") from exc
            if earlier.get("fingerprint") != fingerprint or earlier.get("format") != _FORMAT:
                raise InputError(
                    f"class cache {self.folder} holds class maps of other VB-Net weights; "
                    "give a new folder (or delete this one)"
                )
        else:
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps({"fingerprint": fingerprint, "format": _FORMAT}, indent=2) + "\n")
        self.fingerprint = fingerprint

    def path(self, case_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)
        return self.folder / f"{safe}.npz"

    def load(self, case_id: str, shape: tuple[int, ...]) -> SegmentationOutput | None:
        """The case's class map on a grid of ``shape``; None where there is none, or it is unreadable
        or of another grid (e.g. after a change of the loader): the case is then segmented again."""
        path = self.path(case_id)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                if tuple(int(n) for n in z["shape"]) != tuple(shape):
                    return None
                box = [(int(a), int(b)) for a, b in z["box"]]
                classes = np.zeros(shape, dtype=np.uint8)
                classes[tuple(slice(a, b) for a, b in box)] = z["classes"]
                column = None
                if z["column_k"].size:
                    sx, sy, sz = (float(s) for s in z["column_spacing"])
                    column = SpineColumn(z["column_k"].copy(), z["column_ij"].copy(), (sx, sy, sz))
                warnings = json.loads(str(z["warnings"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            log.warning("class cache: unreadable %s (%s); the case is segmented again", path, exc)
            return None
        return SegmentationOutput(classes, box, warnings, column)

    def save(self, case_id: str, seg: SegmentationOutput) -> None:
        """Store the class map (only its box: every class voxel lies in it) atomically."""
        sl = tuple(slice(a, b) for a, b in seg.box)
        col = seg.column
        with atomic_path(self.path(case_id)) as tmp, tmp.open("wb") as fh:
            np.savez_compressed(
                fh,
                shape=np.asarray(seg.classes.shape, dtype=np.int64),
                box=np.asarray(seg.box, dtype=np.int64),
                classes=seg.classes[sl],
                column_k=np.zeros(0, dtype=np.int64) if col is None else np.asarray(col.k),
                column_ij=np.zeros((0, 2)) if col is None else np.asarray(col.ij),
                column_spacing=np.zeros(3) if col is None else np.asarray(col.spacing, dtype=float),
                warnings=np.asarray(json.dumps(seg.warnings)),
            )
