"""One training pass and one validation pass in plain torch; `epochs.run_epochs` runs them epoch after epoch, in this
process and inside each Ray Train worker alike.

The device is passed in, never chosen here. The model is called as `model(x, c, beta=beta)`, which returns a
`LossOutput`: that call goes through DistributedDataParallel's forward when the model is wrapped (the only way DDP
synchronises gradients), and straight to `MLPVAE.forward` when it is not.

Metrics are accumulated on the device as row-weighted sums and read back once per pass, so a pass costs one
host-device sync rather than one per step, and a short last batch counts for exactly its rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vae_pipeline.config import TrainingConfig
from vae_pipeline.errors import DataError
from vae_pipeline.models.losses import LossOutput

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor | None]  # x (B, D) and the condition c (B, C), or None for an unconditional model
DEFAULT_MAX_GRAD_NORM = 1.0


class PassMetrics(TypedDict):
    """Row-weighted means over one pass through the batches."""

    loss: float
    recon: float
    kl: float
    kl_per_dim: list[float]
    rows: int


class _RowWeightedMeans:
    """Sums of per-batch means times batch rows, kept as detached device tensors."""

    def __init__(self) -> None:
        self.rows = 0
        self.sums: dict[str, Tensor] = {}

    def add(self, out: LossOutput, rows: int) -> None:
        terms = {"loss": out.loss, "recon": out.recon, "kl": out.kl, "kl_per_dim": out.kl_per_dim}
        for name, value in terms.items():
            weighted = value.detach() * rows
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.rows += rows

    def means(self, what: str) -> PassMetrics:
        if self.rows == 0:
            raise DataError(f"{what} got no rows; check the split fractions and that the dataset is not empty")
        mean = {name: (total / self.rows).cpu() for name, total in self.sums.items()}
        if not math.isfinite(float(mean["loss"])):
            raise FloatingPointError(f"{what}: the loss is {float(mean['loss'])}; lower training.learning_rate")
        return PassMetrics(
            loss=float(mean["loss"]),
            recon=float(mean["recon"]),
            kl=float(mean["kl"]),
            kl_per_dim=[float(v) for v in mean["kl_per_dim"]],
            rows=self.rows,
        )


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: full float32, or autocast to bf16/fp16 (fp16 with a loss scaler)."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


FULL_PRECISION = Precision()


def precision_for(device: torch.device | str, mode: str) -> Precision:
    """The autocast setting for `training.mixed_precision` on this device.

    `auto` is bf16 on a CUDA device that supports it (same range as float32, so no loss scaling), fp16 with a
    GradScaler on older GPUs, and full precision on CPUs, where autocast is rarely faster for small MLPs.
    """
    device_type = torch.device(device).type
    if mode == "off" or (mode == "auto" and device_type != "cuda"):
        return Precision(device_type)
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return Precision(device_type, torch.bfloat16)
    return Precision(device_type, torch.float16, torch.amp.GradScaler(device_type))


def make_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Adam:
    """Adam over all parameters with the configured learning rate and weight decay."""
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _to_device(batch: Batch, device: torch.device | str) -> Batch:
    x, c = batch
    x = x.to(device=device, dtype=torch.float32, non_blocking=True)
    return x, None if c is None else c.to(device=device, dtype=torch.float32, non_blocking=True)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    c: Tensor | None,
    beta: float,
    max_grad_norm: float | None = DEFAULT_MAX_GRAD_NORM,
    precision: Precision = FULL_PRECISION,
) -> LossOutput:
    """One gradient step on one batch already on the model's device."""
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        out: LossOutput = model(x, c, beta=beta)
    scaler = precision.scaler
    (scaler.scale(out.loss) if scaler is not None else out.loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    if max_grad_norm is not None:
        # Early batches can put the tight initial gaussian std far from the data; clipping keeps those steps sane.
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return out


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    beta: float,
    device: torch.device | str,
    max_grad_norm: float | None = DEFAULT_MAX_GRAD_NORM,
    precision: Precision = FULL_PRECISION,
) -> PassMetrics:
    """One pass of gradient steps; returns the training terms averaged over rows (as computed before each step)."""
    model.train()
    means = _RowWeightedMeans()
    for batch in batches:
        x, c = _to_device(batch, device)
        means.add(train_step(model, optimizer, x, c, beta, max_grad_norm, precision), rows=x.shape[0])
    return means.means("train_one_epoch")


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    beta: float,
    device: torch.device | str,
    generator: torch.Generator | None = None,
    precision: Precision = FULL_PRECISION,
) -> PassMetrics:
    """The loss terms on held-out batches without gradients; pass a generator for a reproducible posterior draw.

    A DDP wrapper is bypassed: evaluation needs no gradient sync, and skipping the wrapper's per-call buffer
    broadcast means workers with different numbers of validation batches cannot deadlock. No batches at all (an
    empty validation split, or an empty shard of one) gives NaN means and `rows == 0`.
    """
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    inner.eval()
    means = _RowWeightedMeans()
    with torch.no_grad(), precision.autocast():
        for batch in batches:
            x, c = _to_device(batch, device)
            means.add(inner(x, c, beta=beta, generator=generator), rows=x.shape[0])
    if means.rows == 0:
        return _nan_metrics(inner)
    return means.means("evaluate")


def _nan_metrics(model: nn.Module) -> PassMetrics:
    nan = float("nan")
    latent_dim = getattr(getattr(model, "config", None), "latent_dim", 0)
    return PassMetrics(loss=nan, recon=nan, kl=nan, kl_per_dim=[nan] * latent_dim, rows=0)


def tensor_batches(
    x: Tensor, c: Tensor | None = None, batch_size: int = 500, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Batches of in-memory tensors for local runs; shuffled with `generator` when given, in order otherwise."""
    rows = x.shape[0]
    order = torch.randperm(rows, generator=generator) if generator is not None else torch.arange(rows)
    for start in range(0, rows, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], None if c is None else c[idx]
