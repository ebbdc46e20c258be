"""Resumable training state beside the model checkpoint, as safetensors (never a pickle).

The optimizer's tensors are flattened to ``opt.<param index>.<name>``; its param groups, the epoch
and step reached, the best validation score and the log travel as JSON in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..models.checkpoints import CheckpointError, write_safetensors


def save_training_state(path: Path, optimizer: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, float]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    metadata = {
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        "progress": json.dumps(progress),
    }
    write_safetensors(Path(path), tensors, metadata)  # atomic: a run killed while saving keeps the previous state


def load_training_state(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from ``path``; returns the progress dict saved with it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        groups, scalars, progress = (json.loads(meta[k]) for k in ("param_groups", "scalars", "progress"))
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a forensix training state ({e})") from e
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in scalars.items():
        state.setdefault(int(index), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: the optimizer state does not fit this model ({e})") from e
    return progress
