"""Training checkpoints: model and optimizer tensors in safetensors, the rest in JSON (never pickle).

A checkpoint is written to a local directory and copied into the run's `CheckpointStore` on any storage;
`load_training_state` reads one back when a rerun with the same run name resumes, on either executor.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vae_pipeline import storage
from vae_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

_MODEL_FILE = "model.safetensors"
_BEST_FILE = "best.safetensors"  # the weights of the epoch with the lowest validation loss so far
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"
_LATEST = "latest.json"  # names the newest complete checkpoint directory


@dataclass
class TrainingState:
    """What a resumed run needs besides the tensors."""

    epoch: int  # epochs completed
    run_key: str  # hash of the config sections that shape the model; a resume must match it
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    best_weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def observe(self, epoch: int, val_loss: float, model: torch.nn.Module) -> None:
        """Keep the weights of the best epoch so far (lowest finite validation loss)."""
        if val_loss == val_loss and (self.best_val_loss is None or val_loss < self.best_val_loss):
            self.best_val_loss, self.best_epoch = float(val_loss), epoch
            # A copy: on the CPU `.to("cpu")` would alias the live parameters, which keep training.
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "best_weights"}


def save_training_state(
    directory: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState
) -> None:
    save_file(_cpu(model.state_dict()), os.path.join(directory, _MODEL_FILE))
    tensors, groups = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, os.path.join(directory, _OPTIMIZER_FILE))
    if state.best_weights is not None:
        save_file(state.best_weights, os.path.join(directory, _BEST_FILE))
    payload = {"state": state.to_json(), "param_groups": groups}
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
    if os.path.exists(os.path.join(directory, _BEST_FILE)):
        state.best_weights = load_file(os.path.join(directory, _BEST_FILE))
    return state


def read_metrics(directory: str) -> list[dict[str, Any]]:
    """The per-epoch metrics a checkpoint carries (every epoch so far, resumed ones included)."""
    with open(os.path.join(directory, _STATE_FILE)) as handle:
        return list(json.load(handle)["state"]["metrics"])


def load_model_weights(directory: str, *, best: bool = False) -> dict[str, torch.Tensor]:
    """The last epoch's weights, or with `best` those of the lowest validation loss (the last if none)."""
    best_path = os.path.join(directory, _BEST_FILE)
    return load_file(best_path if best and os.path.exists(best_path) else os.path.join(directory, _MODEL_FILE))


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


def checkpoint_url(model_url: str, run_name: str) -> str:
    """Where a training run's checkpoints live: `<model_url>/checkpoints/<run_name>`."""
    return storage.join_url(model_url, "checkpoints", run_name)


class CheckpointStore:
    """A run's checkpoints under one URL on any storage: `epoch-NNNNN/` directories and `latest.json` naming the
    newest complete one (written after its files, so it is the commit). The previous checkpoint is removed only
    after the next one is committed. Both executors write here (on Ray, rank 0), so a run resumes on either."""

    def __init__(self, url: str) -> None:
        self.url = url

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
        name = f"epoch-{state.epoch:05d}"
        previous = self._latest()
        with tempfile.TemporaryDirectory() as directory:
            save_training_state(directory, model, optimizer, state)
            for file in sorted(os.listdir(directory)):
                with open(os.path.join(directory, file), "rb") as handle:
                    storage.atomic_write(storage.join_url(self.url, name, file), handle.read())
        storage.write_json(storage.join_url(self.url, _LATEST), {"directory": name, "epoch": state.epoch})
        if previous is not None and previous != name:
            storage.remove(storage.join_url(self.url, previous))

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_key: str) -> TrainingState | None:
        """The state of the newest checkpoint, loaded into `model` and `optimizer`; None when there is none."""
        name = self._latest()
        if name is None:
            return None
        with self._downloaded(name) as directory:
            state = load_training_state(directory, model, optimizer, run_key)
        logger.warning("resuming from the checkpoint after epoch %d (%s)", state.epoch, storage.redact_url(self.url))
        return state

    @contextmanager
    def _downloaded(self, name: str) -> Iterator[str]:
        with tempfile.TemporaryDirectory() as directory:
            for url in storage.list_urls(storage.join_url(self.url, name)):
                with open(os.path.join(directory, url.rstrip("/").rsplit("/", 1)[-1]), "wb") as handle:
                    handle.write(storage.read_bytes(url))
            yield directory

    def _latest(self) -> str | None:
        latest = storage.join_url(self.url, _LATEST)
        return str(storage.read_json(latest)["directory"]) if storage.exists(latest) else None

    def final(self, *, best: bool) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """The newest checkpoint's weights (the best epoch's with `best`, when one was scored) and metrics."""
        name = self._latest()
        if name is None:
            raise ConfigError(f"no training checkpoint at {storage.redact_url(self.url)}; check the worker logs above")
        with self._downloaded(name) as directory:
            return load_model_weights(directory, best=best), read_metrics(directory)
