"""The epoch loop: the one loop that trains every model, in this process (`local.py`) or on each Ray Train worker.

Each epoch is a training pass and a validation pass (`loop.py`), a record of its losses, the best weights kept in
memory, and a hook that reports the epoch and, when due, saves a checkpoint. Executors differ only in where the
batches come from, how workers agree (`Collective`) and what the hook does with an epoch.

Checkpoints cost a storage round trip, so they are written when `training.checkpoint_interval_s` has passed since
the last one or every `training.checkpoint_every_epochs` epochs, and always after the last epoch (the best epoch's
weights travel in every checkpoint, so the end never loses them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from vae_pipeline.config import TrainingConfig
from vae_pipeline.training.checkpoint import TrainingState
from vae_pipeline.training.loop import FULL_PRECISION, Batch, Precision, evaluate, train_one_epoch

logger = logging.getLogger(__name__)

SplitName = Literal["train", "validation"]
# `batches(split, epoch)`: that epoch's batches of one split (shuffled for training, seeded by the epoch).
BatchSource = Callable[[SplitName, int], Iterable[Batch]]
# `on_epoch(state, record, checkpoint)`: after every epoch; `checkpoint` says whether a checkpoint is due (on Ray,
# only rank 0 writes one, so the workers need not agree on a time-based decision).
EpochHook = Callable[[TrainingState, dict[str, Any], bool], None]


@dataclass
class TrainedModel:
    """What an executor hands back: the bundle's weights and every epoch's record."""

    weights: dict[str, torch.Tensor]
    metrics: list[dict[str, Any]]


class Collective(Protocol):
    """How the workers of one run agree; in one process, trivially."""

    def mean(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Each metric averaged over workers (scalars and lists)."""
        ...


class SingleProcess:
    """The collective of one worker."""

    def mean(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (list(map(float, v)) if isinstance(v, list | tuple) else float(v)) for k, v in values.items()}


@dataclass
class CheckpointSchedule:
    """When the next checkpoint is due: every N epochs, after an interval, and always at the end."""

    every_epochs: int | None
    interval_s: float
    last_at: float = field(default_factory=time.monotonic)

    def due(self, epochs_done: int, final: bool) -> bool:
        now = time.monotonic()
        every = self.every_epochs is not None and epochs_done % self.every_epochs == 0
        if final or every or now - self.last_at >= self.interval_s:
            self.last_at = now
            return True
        return False


def run_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    training: TrainingConfig,
    batches: BatchSource,
    device: torch.device | str,
    on_epoch: EpochHook,
    *,
    collective: Collective | None = None,
    precision: Precision = FULL_PRECISION,
) -> TrainingState:
    """Train from `state.epoch` to `training.epochs` (or an early stop); returns the final state.

    Every worker of a run calls this with its own shard of batches; the metrics in each record are the workers'
    means, so every worker sees the same record and takes the same early-stopping decision.
    """
    collective = collective or SingleProcess()
    schedule = CheckpointSchedule(training.checkpoint_every_epochs, training.checkpoint_interval_s)
    for epoch in range(state.epoch, training.epochs):
        started = time.perf_counter()
        train = train_one_epoch(model, optimizer, batches("train", epoch), training.beta, device, precision=precision)
        val = evaluate(model, batches("validation", epoch), training.beta, device, precision=precision)
        record = epoch_record(epoch, collective.mean(train), collective.mean(val), started)
        state.epoch, state.metrics = epoch + 1, [*state.metrics, record]
        state.observe(epoch + 1, record["val_loss"], unwrap(model))
        stop = patience_exhausted(state, training)
        final = stop or state.epoch == training.epochs
        on_epoch(state, record, schedule.due(state.epoch, final))
        if stop:
            logger.info("early stop: no better validation loss since epoch %s", state.best_epoch)
            break
    return state


def epoch_record(epoch: int, train: Mapping[str, Any], val: Mapping[str, Any], started: float) -> dict[str, Any]:
    """One epoch's JSON record: `epoch` (1-based), `seconds`, and `train_*`/`val_*` losses."""
    record: dict[str, Any] = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 4)}
    for prefix, values in (("train", train), ("val", val)):
        for name, value in values.items():
            record[f"{prefix}_{name}"] = value
    return record


def patience_exhausted(state: TrainingState, training: TrainingConfig) -> bool:
    patience = training.early_stopping_patience
    return patience is not None and state.best_epoch is not None and state.epoch - state.best_epoch >= patience


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = model.module if hasattr(model, "module") else model
    assert isinstance(inner, torch.nn.Module)
    return inner


def final_weights(model: torch.nn.Module, state: TrainingState, keep_best: bool) -> dict[str, torch.Tensor]:
    """The bundle's weights: the best epoch's with `keep_best` (when one was scored), else the last epoch's."""
    if keep_best and state.best_weights is not None:
        return state.best_weights
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
