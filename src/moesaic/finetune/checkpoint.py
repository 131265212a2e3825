"""Checkpoints: trainable weights, optimizer, scheduler, RNG states and the data position, written atomically.

A checkpoint folder ``checkpoints/step-00000042`` appears only when complete (``atomic_dir``), so the
latest folder is always resumable. Frozen weights are not stored: they are the base model's. Resuming
restores every state, so a run killed and resumed reaches the same weights as one never interrupted.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moesaic.atomic import atomic_dir
from moesaic.errors import ConfigError

__all__ = ["TrainState", "save_checkpoint", "latest_checkpoint", "load_checkpoint", "trainable_state", "rng_state"]

_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches consumed (the data-order position)
    samples: int = 0
    elapsed_s: float = 0.0


def trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, model: Any, optimizer: Any, scheduler: Any, state: TrainState,
                    config: Any, keep: int, rng_states: list[dict[str, Any]] | None = None) -> Path:
    """Write ``step-N`` atomically; ``rng_states`` holds one RNG state per process (default: this one's)."""
    import torch
    from safetensors.torch import save_file

    final = root / f"step-{state.step:08d}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states or [rng_state()], tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))
        config.save(tmp)
    for old in _checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))


def latest_checkpoint(root: Path) -> Path | None:
    found = _checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, rank: int = 0) -> TrainState:
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise ConfigError(f"checkpoint {folder} was written by a run that trained other parameters "
                          f"({len(weights)} tensors saved, {len(expected)} trainable now)",
                          "resume with the same method/LoRA settings, use a new output_dir, or pass --no-resume")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    states = torch.load(folder / "rng.pt", weights_only=False)
    _set_rng_state(states[rank] if rank < len(states) else states[0])
    return TrainState(**json.loads((folder / "state.json").read_text()))
