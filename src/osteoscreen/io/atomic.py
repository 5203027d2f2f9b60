"""Atomic file writing: a failed run leaves no half-written output file.

Each writer writes to a temporary file in the destination's folder (same file system) and
then renames it over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["atomic_path", "write_bytes_atomic", "write_dataset_atomic"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    On an exception inside the block the temporary file is removed and ``path`` is left as
    it was.

    Args:
        path: the final destination; its folder must exist.

    Raises:
        TypeError: if ``path`` is not a str or path-like object.
        FileNotFoundError: if the destination folder does not exist.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    dest = Path(path)
    folder = dest.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"path: folder {folder} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files; outputs are for PACS nodes and other users to read.
        tmp.chmod(0o644)
        os.replace(tmp, dest)
        logger.debug("wrote %s", dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write ``data`` to ``path`` atomically."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(data))


def write_dataset_atomic(ds: Dataset, path: str | os.PathLike[str]) -> None:
    """Write a DICOM dataset (e.g. a highdicom SR or SEG) to ``path`` atomically.

    The dataset is written as a DICOM Part 10 file with its file meta information
    (``enforce_file_format=True``).

    Raises:
        TypeError: if ``ds`` is not a pydicom Dataset.
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a pydicom Dataset, got {type(ds).__name__}")
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
