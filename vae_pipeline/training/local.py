"""Training in this process: the same epoch loop as each Ray Train worker, on tensors encoded once in memory.

No Ray start-up, no controller, no worker group, no per-epoch object-store reads: a table that fits in memory is
encoded batch by batch by the same transform (`EncodeRows`), split into train and validation tensors once, and
shuffled per epoch by a generator seeded from `training.seed` and the epoch. Checkpoints go to the run's
`CheckpointStore`, the one the Ray path uses too, so an interrupted run resumes on either executor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from vae_pipeline.config import DataConfig, PipelineConfig
from vae_pipeline.data import TableSource
from vae_pipeline.models.base import ModelShape
from vae_pipeline.models.registry import build
from vae_pipeline.progress import NO_PROGRESS, Progress
from vae_pipeline.split import Split
from vae_pipeline.training.checkpoint import CheckpointStore, TrainingState, checkpoint_url
from vae_pipeline.training.epochs import SplitName, TrainedModel, final_weights, run_epochs
from vae_pipeline.training.loop import make_optimizer, precision_for, tensor_batches
from vae_pipeline.training.prepare import EncodeRows
from vae_pipeline.transforms.table import TableTransform

logger = logging.getLogger(__name__)

_SHUFFLE_STRIDE = 1_000_003  # each epoch's shuffle seed: seed * stride + epoch, as the Ray path seeds its shuffle


@dataclass
class EncodedSplits:
    """The modelled rows as tensors: x (N, D) and the condition c (N, C) or None, per split."""

    tensors: dict[SplitName, tuple[torch.Tensor, torch.Tensor | None]]


def encoded_bytes(rows: int, transform: TableTransform) -> int:
    """What `encode_splits` will hold for a table of `rows` rows: float32 features and conditions."""
    condition = len(transform.label_classes) if transform.conditional else 0
    return rows * (transform.output_dim + condition) * 4


def encode_splits(source: TableSource, transform: TableTransform, data: DataConfig) -> EncodedSplits:
    """Encode the input once, batch by batch, with the transform Ray Data's actors use; holdout rows are dropped."""
    encode = EncodeRows(transform=transform, data=data)
    parts = [encode(pa.Table.from_batches([batch])) for batch in source.batches(data.batch_rows)]
    joined = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}
    tensors: dict[SplitName, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for name, split in (("train", Split.TRAIN), ("validation", Split.VALIDATION)):
        keep = joined["split"] == split if joined else np.zeros(0, dtype=bool)
        x = torch.from_numpy(np.ascontiguousarray(joined["x"][keep])) if joined else torch.zeros(0)
        c = torch.from_numpy(np.ascontiguousarray(joined["c"][keep])) if "c" in joined else None
        tensors[name] = (x, c)  # type: ignore[index]
    return EncodedSplits(tensors)


def fit_local(
    config: PipelineConfig,
    model_config: ModelShape,
    splits: EncodedSplits,
    run_key: str,
    run_name: str,
    progress: Progress = NO_PROGRESS,
) -> TrainedModel:
    """Run the epoch loop here, on the CPU (or this process's GPU with `use_gpu`)."""
    training = config.training
    device = torch.device("cuda" if training.use_gpu else "cpu")
    torch.manual_seed(training.seed)
    model = build(model_config).to(device)
    optimizer = make_optimizer(model, training)
    checkpoints = CheckpointStore(checkpoint_url(config.model_url, run_name))
    state = checkpoints.resume(model, optimizer, run_key) or TrainingState(epoch=0, run_key=run_key)
    progress.advance(state.epoch)
    batch_size = training.batch_size or 500

    def batches(split: SplitName, epoch: int) -> Any:
        x, c = splits.tensors[split]
        if split == "validation":
            return tensor_batches(x, c, batch_size)
        shuffle = torch.Generator().manual_seed(training.seed * _SHUFFLE_STRIDE + epoch)
        return tensor_batches(x, c, batch_size, generator=shuffle)

    def on_epoch(state: TrainingState, record: dict[str, Any], checkpoint: bool) -> None:
        logger.info(
            "epoch %d/%d  train loss %.4f  val loss %.4f  kl %.3f  (%.2fs)", record["epoch"], training.epochs,
            record["train_loss"], record["val_loss"], record["train_kl"], record["seconds"],
        )  # fmt: skip
        progress.advance(1, f"val loss {record['val_loss']:.4g}")
        if checkpoint:
            checkpoints.save(model, optimizer, state)

    logger.info("training run %s: %d epochs in this process on %s", run_name, training.epochs, device)
    precision = precision_for(device, training.mixed_precision)
    state = run_epochs(model, optimizer, state, training, batches, device, on_epoch, precision=precision)
    return TrainedModel(final_weights(model, state, training.keep_best), state.metrics)
