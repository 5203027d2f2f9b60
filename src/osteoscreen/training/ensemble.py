"""Ensembles of DenseNets trained alike from other seeds: one bundle, one TorchScript model.

``build_ensemble`` takes trained bundles of one task, architecture, crop and context channels
(``osteoscreen train regressor --seed 1 --split-seed 0`` beside a ``--seed 0`` run) and writes
one bundle whose ``model.ts`` is their mean (``networks.MeanEnsemble``). Given the cohort, it
measures every member and the ensemble on the validation split the members shared, and puts
those figures in the bundle's metadata.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..networks import MeanEnsemble, make_calibrated_densenet
from ..transforms import CropSpec, context_channels, context_channels_of
from .common import code_version
from .data import augment_crop, prepare_vertebra_samples, read_cohort, split_cases
from .densenet import _evaluate

__all__ = ["build_ensemble"]

log = logging.getLogger(__name__)


def _read_bundle(folder: Path) -> tuple[dict[str, Any], dict[str, Any], torch.nn.Module]:
    try:
        inference = json.loads((folder / "configs" / "inference.json").read_text())
        metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"ensemble member {folder}: unreadable configs ({exc})") from exc
    net_def = dict(inference.get("network_def", {}))
    if net_def.get("_target_") != "osteoscreen.networks.make_calibrated_densenet" or "ensemble" in net_def:
        raise ValueError(f"ensemble member {folder}: not a single calibrated DenseNet bundle")
    net_def.pop("_target_")
    net = make_calibrated_densenet(**net_def)
    ts = folder / "models" / "model.ts"
    try:
        net.load_state_dict(torch.jit.load(str(ts), map_location="cpu").state_dict())
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"ensemble member {folder}: {ts} does not load ({str(exc).splitlines()[0]})"
        ) from exc
    return inference, metadata, net.eval()


def build_ensemble(
    members: Sequence[Path],
    out: Path,
    *,
    cohort: Path | None = None,
    cache: Path | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.15,
) -> dict[str, Any]:
    """Write ``out`` (a bundle folder) as the mean of the ``members`` bundles.

    Args:
        members: bundle folders (``.../densenet_regressor``) of one task and architecture.
        out: the ensemble's bundle folder (replaced).
        cohort: the training cohort; where given, members and ensemble are measured on its
            validation split (``split_seed``, ``val_fraction``: as the members were trained).
        cache: the vertebra crop cache (default: ``runs/cache`` beside the first member).

    Returns:
        The validation metrics: ``{"members": [...], "ensemble": {...}}`` (empty without a cohort).

    Raises:
        ValueError: fewer than two members, or members that differ in what they read or predict.
    """
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two member bundles")
    read = [_read_bundle(Path(m)) for m in members]
    inference, metadata, _ = read[0]
    for (inf, _meta, _net), path in zip(read[1:], members[1:]):
        if inf != inference:
            raise ValueError(
                f"ensemble member {path}: its inference.json differs from {members[0]}'s "
                "(network, crop, context channels and output must be the same)"
            )
    task = str(inference["network_def"]["task"])
    ensemble = MeanEnsemble([net for _, _, net in read]).eval()

    validation: dict[str, Any] = {}
    if cohort is not None:
        spec = CropSpec.from_dict(inference)
        channels = context_channels_of(inference)
        rows = read_cohort(cohort)
        _, val_rows = split_cases(rows, val_fraction, split_seed)
        crop_cache = cache if cache is not None else Path(members[0]).parent / "cache"
        samples = [s for r in val_rows for s in prepare_vertebra_samples(r, spec, crop_cache)]
        val_x = torch.stack(
            [context_channels(augment_crop(s, spec, None), s.context, channels) for s in samples]
        )
        run = _evaluate(val_x, torch.tensor([s.bmd for s in samples]).numpy(), task)
        with torch.no_grad():
            validation = {"members": [run(net) for _, _, net in read], "ensemble": run(ensemble)}
        validation["n_val_vertebrae"] = len(samples)
        log.info("validation: members %s, ensemble %s", validation["members"], validation["ensemble"])

    example = torch.zeros(
        2, int(inference["network_def"]["in_channels"]), *CropSpec.from_dict(inference).crop_size
    )
    scripted = torch.jit.script(ensemble)
    with torch.no_grad():
        if not torch.allclose(ensemble(example), scripted(example), atol=1e-4):
            raise RuntimeError("ensemble: TorchScript output differs from the eager model")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "configs").mkdir(parents=True)
    (tmp / "models").mkdir()
    torch.jit.save(scripted, str(tmp / "models" / "model.ts"))
    net_def = {**inference["network_def"], "ensemble": {"members": len(read), "combine": "mean"}}
    member_info = [
        {
            "path": str(path),
            "version": meta.get("version"),
            "training_seed": meta.get("training_seed"),
            "split_seed": meta.get("split_seed"),
            "iterations": meta.get("trained", {}).get("iterations"),
            "best_iteration": meta.get("trained", {}).get("best_iteration"),
            "best_metrics": meta.get("trained", {}).get("best_metrics"),
            "date": meta.get("trained", {}).get("date"),
        }
        for (_, meta, _), path in zip(read, members)
    ]
    trained = dict(metadata.get("trained", {}))
    trained.update(
        {
            "iterations": [m["iterations"] for m in member_info],
            "best_iteration": [m["best_iteration"] for m in member_info],
            "best_metrics": validation.get("ensemble", {}),
            "ensemble": member_info,
            "validation": validation,
        }
    )
    meta_out = {
        **metadata,
        "version": code_version(),
        "description": f"{metadata.get('description', task)}; "
        f"mean of {len(read)} networks trained from other seeds",
        "trained": trained,
    }
    meta_out.pop("training_seed", None)
    meta_out.pop("split_seed", None)
    (tmp / "configs" / "metadata.json").write_text(json.dumps(meta_out, indent=2))
    (tmp / "configs" / "inference.json").write_text(
        json.dumps({**inference, "network_def": net_def}, indent=2)
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return validation
