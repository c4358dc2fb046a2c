"""Per-epoch training checkpoints: model and optimizer tensors in safetensors, the rest in JSON (never pickle).

A checkpoint is a local directory that Ray Train persists to the run's storage; `load_training_state` reads one
back when a rerun with the same run name resumes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vae_pipeline.errors import ConfigError

_MODEL_FILE = "model.safetensors"
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"


@dataclass
class TrainingState:
    """What a resumed run needs besides the tensors."""

    epoch: int  # epochs completed
    run_key: str  # hash of the config sections that shape the model; a resume must match it
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float | None = None


def save_training_state(
    directory: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState
) -> None:
    save_file(_cpu(model.state_dict()), os.path.join(directory, _MODEL_FILE))
    tensors, groups = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, os.path.join(directory, _OPTIMIZER_FILE))
    payload = {"state": state.__dict__, "param_groups": groups}
    with open(os.path.join(directory, _STATE_FILE), "w") as handle:
        json.dump(payload, handle, sort_keys=True)


def load_training_state(
    directory: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, expected_run_key: str
) -> TrainingState:
    with open(os.path.join(directory, _STATE_FILE)) as handle:
        payload = json.load(handle)
    state = TrainingState(**payload["state"])
    if state.run_key != expected_run_key:
        raise ConfigError(
            "the checkpoint under this run name was made with a different model or data config; "
            "choose a new training.run_name (or delete the old checkpoints) to start fresh"
        )
    device = next(model.parameters()).device
    model.load_state_dict(load_file(os.path.join(directory, _MODEL_FILE), device=str(device)))
    tensors = load_file(os.path.join(directory, _OPTIMIZER_FILE), device=str(device))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, payload["param_groups"]))
    return state


def load_model_weights(directory: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(directory, _MODEL_FILE))


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimizer state -> ({"<param>.<slot>": tensor}, JSON param groups)."""
    tensors: dict[str, torch.Tensor] = {}
    for param_id, slots in state_dict["state"].items():
        for slot, value in slots.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{param_id}.{slot}"] = tensor.detach().to("cpu").contiguous()
    return tensors, state_dict["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        param_id, slot = key.split(".", 1)
        state.setdefault(int(param_id), {})[slot] = tensor
    return {"state": state, "param_groups": groups}
