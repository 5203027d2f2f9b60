"""pydicom 3 moved ``pydicom._storage_sopclass_uids``; pydicom-seg (used by MONAI Label's DICOM
SEG reader and writer) still imports it. :func:`install` provides that module, built from
``pydicom.uid``, in any process that imports this one first (the server and the training
subprocess both load main.py, which does)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

_NAME = "pydicom._storage_sopclass_uids"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        import pydicom.uid

        mod = types.ModuleType(_NAME)
        for key in dir(pydicom.uid):
            value = getattr(pydicom.uid, key)
            if isinstance(value, pydicom.uid.UID):
                setattr(mod, key, value)
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname != _NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


def install() -> None:
    """Make ``import pydicom._storage_sopclass_uids`` work (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
