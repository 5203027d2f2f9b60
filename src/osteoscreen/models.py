"""Loading the shipped (or a user's) models from a MONAI-bundle-style folder.

A models folder holds one sub-folder per model: ``vbnet_coarse``, ``vbnet_fine``,
``densenet_classifier``, ``densenet_regressor``, each with ``configs/metadata.json``,
``configs/inference.json`` and ``models/model.ts``. The folder comes from ``--models``, the
``OSTEOSCREEN_MODELS`` or ``HOLOSCAN_MODEL_PATH`` variables, or the repository's ``models/``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .transforms import context_channels_of

__all__ = ["MODEL_NAMES", "Bundle", "ModelSet", "default_models_dir", "load_models"]

log = logging.getLogger(__name__)

MODEL_NAMES = ("vbnet_coarse", "vbnet_fine", "densenet_classifier", "densenet_regressor")


@dataclass
class Bundle:
    name: str
    path: Path
    network: torch.jit.ScriptModule
    inference: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def context_channels(self) -> list[str]:
        """The scan-context channels this bundle was trained with (none for the VB-Nets)."""
        return context_channels_of(self.inference)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))


@dataclass
class ModelSet:
    coarse: Bundle
    fine: Bundle
    classifier: Bundle
    regressor: Bundle
    device: torch.device

    @property
    def uses_context(self) -> bool:
        """True when the DenseNets take the scan context (kVp, references) as extra channels."""
        return bool(self.regressor.inference.get("context") or self.classifier.inference.get("context"))

    def uses_context_channel(self, name: str) -> bool:
        """True when either DenseNet reads the context channel ``name`` (e.g. "muscle_hu")."""
        return any(name in b.context_channels for b in (self.regressor, self.classifier))

    def describe(self) -> dict[str, Any]:
        """Model ids and versions for summary.json and the SR's algorithm identification."""
        out: dict[str, Any] = {}
        for b in (self.coarse, self.fine, self.classifier, self.regressor):
            trained = b.metadata.get("trained", {})
            out[b.name] = {"name": b.name, "version": b.version, "iterations": trained.get("iterations")}
        return out


def default_models_dir() -> Path:
    for var in ("OSTEOSCREEN_MODELS", "HOLOSCAN_MODEL_PATH"):
        v = os.environ.get(var)
        if v and Path(v).is_dir():
            return Path(v)
    return Path(__file__).resolve().parents[2] / "models"


def _load_bundle(folder: Path, device: torch.device) -> Bundle:
    ts = folder / "models" / "model.ts"
    if not ts.is_file():
        raise InputError(
            f"model {folder.name} not found: expected {ts} (run `make models` or pass --models DIR)"
        )
    try:
        inference = json.loads((folder / "configs" / "inference.json").read_text())
        metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"model {folder.name}: unreadable configs ({exc})") from exc
    try:
        net = torch.jit.load(str(ts), map_location=device)
    except RuntimeError as exc:
        raise InputError(
            f"model {folder.name}: {ts} is not a TorchScript model ({str(exc).splitlines()[0]})"
        ) from exc
    net.eval()
    return Bundle(folder.name, folder, net, inference, metadata)


def load_models(models_dir: Path | None = None, device: str = "cpu") -> ModelSet:
    """Load the four bundles.

    Raises:
        InputError: a missing or unreadable model, saying which and how to get it.
    """
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    if not root.is_dir():
        raise InputError(f"models folder not found: {root} (run `make models` or pass --models DIR)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    dev = torch.device(device)
    b = {name: _load_bundle(root / name, dev) for name in MODEL_NAMES}
    return ModelSet(
        b["vbnet_coarse"], b["vbnet_fine"], b["densenet_classifier"], b["densenet_regressor"], dev
    )
