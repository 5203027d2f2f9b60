"""What every trainer shares: seeding, checkpoints, resuming, the evaluate-every-20 loop, bundles.

METHOD.md: a checkpoint every 20 iterations, each evaluated on the validation split, the best
chosen by the combined metrics. The best checkpoint is exported as a MONAI-bundle-style folder:
``configs/metadata.json``, ``configs/inference.json``, ``models/model.ts`` (TorchScript) and
``models/model.pt`` (state dict).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__

__all__ = [
    "TrainState",
    "code_version",
    "ensemble_size",
    "export_bundle",
    "load_init_weights",
    "model_device",
    "seed_everything",
    "train_loop",
    "training_device",
]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


@dataclass
class TrainState:
    iteration: int = 0
    best_score: float = -float("inf")
    best_iteration: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _save_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: TrainState, rng: np.random.Generator
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "state": state.__dict__,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    os.replace(tmp, path)


def train_loop(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]],
    score: Callable[[dict[str, float]], float],
    out: Path,
    iterations: int,
    rng: np.random.Generator,
    eval_every: int = 20,
    resume: bool = True,
    desc: str = "train",
    progress: bool = True,
    scheduler: Any = None,
    time_limit_s: float | None = None,
    device: torch.device | str | None = None,
) -> TrainState:
    """Run the optimisation with checkpoints, validation and best-model selection.

    ``out/checkpoints/last.pt`` is written at every evaluation, ``best.pt`` whenever the
    combined score improves; with ``resume`` a run continues from ``last.pt`` (on any device:
    checkpoints hold CPU tensors). ``device``: where to train (default ``training_device()``);
    batches are moved there, ``evaluate`` gets the model on it.
    """
    from tqdm import tqdm

    dev = torch.device(device) if device is not None else training_device()
    model.to(dev)
    ckdir = out / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    state = TrainState()
    last = ckdir / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        state = TrainState(**ck["state"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        log.info("resuming %s from iteration %d", desc, state.iteration)
    if scheduler is not None:
        for _ in range(state.iteration):
            scheduler.step()
    started = time.monotonic()
    bar = tqdm(total=iterations, initial=state.iteration, desc=desc, unit="it", disable=not progress)
    it = batches(rng)
    running = 0.0
    while state.iteration < iterations:
        model.train()
        x, y = next(it)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.iteration += 1
        value = float(loss.detach())
        running = 0.9 * running + 0.1 * value if state.iteration > 1 else value
        bar.update()
        bar.set_postfix(loss=f"{running:.4f}", best=f"{state.best_score:.4f}")
        out_of_time = time_limit_s is not None and time.monotonic() - started > time_limit_s
        if state.iteration % eval_every == 0 or state.iteration == iterations or out_of_time:
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model)
            s = score(metrics)
            metrics = {**metrics, "score": s, "iteration": state.iteration, "loss": running}
            state.history.append(metrics)
            if s > state.best_score:
                state.best_score, state.best_iteration, state.best_metrics = s, state.iteration, metrics
                tmp = ckdir / "best.tmp"
                torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
                os.replace(tmp, ckdir / "best.pt")
            _save_checkpoint(last, model, optimizer, state, rng)
            log.info("%s it %d: %s", desc, state.iteration, {k: round(v, 4) for k, v in metrics.items()})
        if out_of_time:
            log.warning(
                "%s: time limit of %.0f s reached at iteration %d", desc, time_limit_s, state.iteration
            )
            break
    bar.close()
    model.to("cpu")
    with open(out / "history.json", "w") as fh:
        json.dump(state.history, fh, indent=1)
    return state


def training_device() -> torch.device:
    """``$OSTEOSCREEN_DEVICE`` if set (cpu, cuda, cuda:1, ...), else CUDA where there is one."""
    name = os.environ.get("OSTEOSCREEN_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def export_bundle(
    out: Path,
    model: nn.Module,
    *,
    name: str,
    description: str,
    network: dict[str, Any],
    inference: dict[str, Any],
    state: TrainState,
    cohort: dict[str, Any],
    example_input: torch.Tensor,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the best weights as a bundle: TorchScript, state dict and metadata."""
    best = out / "checkpoints" / "best.pt"
    if best.exists():
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    model.eval()
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        a = model(example_input)
        b = scripted(example_input)
    if not torch.allclose(a, b, atol=1e-4):
        raise RuntimeError(f"{name}: TorchScript output differs from the eager model")
    tmp = out / "models" / "model.ts.tmp"
    torch.jit.save(scripted, str(tmp))
    os.replace(tmp, out / "models" / "model.ts")
    torch.save(model.state_dict(), out / "models" / "model.pt")
    meta = {
        "name": name,
        "version": code_version(),
        "description": description,
        "task": name,
        "network_data_format": inference.get("network_data_format", {}),
        "trained": {
            "iterations": state.iteration,
            "best_iteration": state.best_iteration,
            "best_metrics": state.best_metrics,
            "cohort": cohort,
            "device": str(next(model.parameters()).device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        },
        **(extra or {}),
    }
    with open(out / "configs" / "metadata.json", "w") as fh:
        json.dump(meta, fh, indent=2)
    with open(out / "configs" / "inference.json", "w") as fh:
        json.dump({"network_def": network, **inference}, fh, indent=2)
    return out


def ensemble_size(bundle: Path) -> int:
    """How many networks a bundle's model holds (``networks.MeanEnsemble``; 1 for one network)."""
    path = Path(bundle) / "configs" / "inference.json"
    try:
        net = json.loads(path.read_text()).get("network_def", {})
    except (OSError, json.JSONDecodeError):
        return 1
    return int(net.get("ensemble", {}).get("members", 1)) if isinstance(net, dict) else 1


def load_init_weights(model: nn.Module, bundle: Path, member: int = 0) -> dict[str, str]:
    """Start ``model`` from a bundle's weights (same architecture); returns its provenance.

    From an ensemble bundle, ``member`` chooses the network to start from."""
    ts = bundle / "models" / "model.ts"
    if not ts.is_file():
        raise ValueError(f"init-from: no model at {ts}")
    state = torch.jit.load(str(ts), map_location="cpu").state_dict()
    chosen = ""
    if any(k.startswith("members.") for k in state) and not any(
        k.startswith("members.") for k in model.state_dict()
    ):
        # An ensemble bundle (networks.MeanEnsemble): start from one of its members.
        n = len({k.split(".")[1] for k in state if k.startswith("members.")})
        if not 0 <= member < n:
            raise ValueError(f"init-from {bundle}: an ensemble of {n} networks has no member {member}")
        prefix = f"members.{member}."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        chosen = f"{member} of {n}"
        log.info("fine-tuning member %s of the ensemble %s", chosen, bundle)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"init-from {bundle}: not the same architecture ({str(exc).splitlines()[0]})"
        ) from exc
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    log.info("fine-tuning from %s (version %s)", bundle, meta.get("version"))
    info = {"initialised_from": str(bundle), "initialised_from_version": str(meta.get("version"))}
    if chosen:
        info["initialised_from_member"] = chosen
    return info
