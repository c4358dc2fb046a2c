"""The training loop on a small synthetic table: it learns, it weights by rows, it works through DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vae_pipeline.config import TrainingConfig
from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.models.mlp_vae import MLPVAE, MLPVAEConfig, build_model
from vae_pipeline.training.checkpoint import TrainingState
from vae_pipeline.training.epochs import run_epochs
from vae_pipeline.training.loop import (
    evaluate,
    make_optimizer,
    precision_for,
    tensor_batches,
    train_one_epoch,
)

SPANS = [Span("gaussian", 0, 1, "a"), Span("gaussian", 1, 2, "b"), Span("softmax", 2, 5, "cat")]


def synthetic_table(rows: int, seed: int) -> torch.Tensor:
    """Two correlated values in [-1, 1] and a category decided by their sum: (rows, 5)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(rows, generator=g) * 2 - 1
    a = 0.8 * t + 0.1 * torch.randn(rows, generator=g)
    b = -0.6 * t + 0.1 * torch.randn(rows, generator=g)
    cat = torch.bucketize(t, torch.tensor([-0.33, 0.33]))
    return torch.cat([a.clamp(-1, 1)[:, None], b.clamp(-1, 1)[:, None], torch.eye(3)[cat]], dim=1)


def small_model() -> MLPVAE:
    torch.manual_seed(0)
    return build_model(MLPVAEConfig(5, 2, [32, 32], SPANS))


def test_training_reduces_validation_loss() -> None:
    train_x, val_x = synthetic_table(512, seed=0), synthetic_table(128, seed=1)
    model = small_model()
    optimizer = make_optimizer(model, TrainingConfig(learning_rate=3e-3, weight_decay=0.0))
    val = lambda epoch: tensor_batches(val_x, batch_size=128)  # noqa: E731
    before = evaluate(model, val(0), beta=1.0, device="cpu", generator=torch.Generator().manual_seed(0))

    training = TrainingConfig(learning_rate=3e-3, weight_decay=0.0, beta=1.0, epochs=19)  # 8 steps an epoch
    shuffled = lambda epoch: tensor_batches(train_x, batch_size=64, generator=torch.Generator().manual_seed(epoch))  # noqa: E731
    batches = lambda split, epoch: shuffled(epoch) if split == "train" else val(epoch)  # noqa: E731
    state = run_epochs(model, optimizer, TrainingState(0, "k"), training, batches, "cpu", lambda *_: None)
    history = state.metrics
    after = evaluate(model, val(0), beta=1.0, device="cpu", generator=torch.Generator().manual_seed(0))

    assert len(history) == 19 and [m["epoch"] for m in history] == list(range(1, 20))
    assert after["loss"] < 0.1 * before["loss"]  # about 23 -> 0.6 here: the std shrinks and the category is learned
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert len(history[-1]["val_kl_per_dim"]) == 2


def test_means_are_weighted_by_rows() -> None:
    x = synthetic_table(5, seed=2)
    model = small_model()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    whole = evaluate(model, tensor_batches(x, batch_size=5), 1.0, "cpu", generator=g())
    # 5 rows in batches of 2: the short last batch counts for one row; same noise needs the same draw order.
    gen = g()
    parts = [model(xb, beta=1.0, generator=gen) for xb, _ in tensor_batches(x, batch_size=2)]
    expected = (2 * parts[0].loss + 2 * parts[1].loss + parts[2].loss) / 5
    batched = evaluate(model, tensor_batches(x, batch_size=2), 1.0, "cpu", generator=g())

    assert batched["rows"] == whole["rows"] == 5
    assert batched["loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_train_one_epoch_reports_means_and_steps() -> None:
    x = synthetic_table(10, seed=3)
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, TrainingConfig())

    metrics = train_one_epoch(model, optimizer, tensor_batches(x, batch_size=4), beta=1.0, device="cpu")

    assert metrics["rows"] == 10 and math.isfinite(metrics["loss"])
    assert metrics["loss"] == pytest.approx(metrics["recon"] + metrics["kl"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_empty_training_pass_is_an_error() -> None:
    model = small_model()
    with pytest.raises(DataError, match="no rows"):
        train_one_epoch(model, make_optimizer(model, TrainingConfig()), [], beta=1.0, device="cpu")


def test_empty_evaluation_gives_nan_means() -> None:
    metrics = evaluate(small_model(), [], beta=1.0, device="cpu")
    assert metrics["rows"] == 0 and math.isnan(metrics["loss"]) and len(metrics["kl_per_dim"]) == 2


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_training_through_ddp_wrapper(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(small_model())
        optimizer = make_optimizer(model, TrainingConfig())
        x = synthetic_table(32, seed=5)
        metrics = train_one_epoch(model, optimizer, tensor_batches(x, batch_size=8), beta=1.0, device="cpu")
        val = evaluate(model, tensor_batches(x, batch_size=8), beta=1.0, device="cpu")
        assert math.isfinite(metrics["loss"]) and math.isfinite(val["loss"])
        assert all(p.grad is not None for p in model.parameters())
        assert model.module.training is False  # evaluate ran the inner model in eval mode, bypassing the wrapper
    finally:
        dist.destroy_process_group()


def test_auto_precision_is_full_float32_on_cpu() -> None:
    precision = precision_for("cpu", "auto")
    assert precision.dtype is None and precision.scaler is None
    assert precision_for("cpu", "off").dtype is None


@pytest.mark.parametrize(("mode", "dtype", "scaled"), [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)])
def test_mixed_precision_trains_with_autocast(mode: str, dtype: torch.dtype, scaled: bool) -> None:
    """The GPU path's autocast and loss scaling, exercised on CPU (CPU autocast supports both dtypes)."""
    precision = precision_for("cpu", mode)
    assert precision.dtype == dtype and (precision.scaler is not None) == scaled
    train_x, val_x = synthetic_table(256, seed=0), synthetic_table(64, seed=1)
    model = small_model()
    optimizer = make_optimizer(model, TrainingConfig(learning_rate=3e-3, weight_decay=0.0))
    val = lambda: tensor_batches(val_x, batch_size=64)  # noqa: E731
    before = evaluate(model, val(), beta=1.0, device="cpu", generator=torch.Generator().manual_seed(0))
    for epoch in range(6):
        batches = tensor_batches(train_x, batch_size=64, generator=torch.Generator().manual_seed(epoch))
        metrics = train_one_epoch(model, optimizer, batches, beta=1.0, device="cpu", precision=precision)
        assert math.isfinite(metrics["loss"])
    after = evaluate(
        model, val(), beta=1.0, device="cpu", generator=torch.Generator().manual_seed(0), precision=precision
    )
    assert after["loss"] < before["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32; only compute is cast
