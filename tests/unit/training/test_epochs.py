"""The one epoch loop (`epochs.run_epochs`): records, checkpoint schedule, early stopping, resume, best weights."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from vae_pipeline.config import TrainingConfig
from vae_pipeline.layout import Span
from vae_pipeline.models.mlp_vae import MLPVAEConfig, build_model
from vae_pipeline.training.checkpoint import TrainingState
from vae_pipeline.training.epochs import CheckpointSchedule, final_weights, run_epochs
from vae_pipeline.training.loop import make_optimizer, tensor_batches

Seen = list[tuple[int, bool]]
SPANS = [Span("gaussian", 0, 1, "a"), Span("gaussian", 1, 2, "b"), Span("softmax", 2, 5, "cat")]


def synthetic_table(rows: int, seed: int) -> torch.Tensor:
    """Two noisy values and a one-hot category: (rows, 5)."""
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand(rows, 2, generator=g) * 2 - 1).clamp(-1, 1)
    return torch.cat([values, torch.eye(3)[torch.randint(3, (rows,), generator=g)]], dim=1)


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(MLPVAEConfig(5, 2, [32, 32], SPANS))


def _run(training: TrainingConfig, state: TrainingState | None = None, val: bool = True) -> tuple[TrainingState, Seen]:
    train_x, val_x = synthetic_table(64, seed=0), synthetic_table(32, seed=1)
    model = small_model()
    optimizer = make_optimizer(model, training)

    def batches(split: str, epoch: int) -> Any:
        if split == "validation":
            return tensor_batches(val_x, batch_size=16) if val else []
        return tensor_batches(train_x, batch_size=16, generator=torch.Generator().manual_seed(epoch))

    seen: Seen = []
    hook = lambda state, record, checkpoint: seen.append((record["epoch"], checkpoint))  # noqa: E731
    final = run_epochs(model, optimizer, state or TrainingState(0, "k"), training, batches, "cpu", hook)
    return final, seen


def test_records_every_epoch_and_checkpoints_only_at_the_end_by_default() -> None:
    state, seen = _run(TrainingConfig(epochs=4, checkpoint_interval_s=3600))
    assert [m["epoch"] for m in state.metrics] == [1, 2, 3, 4] and state.epoch == 4
    assert seen == [(1, False), (2, False), (3, False), (4, True)]
    assert {"train_loss", "val_loss", "train_kl_per_dim", "seconds"} <= set(state.metrics[0])
    assert state.best_epoch is not None and state.best_weights is not None


def test_checkpoint_every_n_epochs_and_interval_zero() -> None:
    _, every_two = _run(TrainingConfig(epochs=5, checkpoint_every_epochs=2, checkpoint_interval_s=3600))
    assert [epoch for epoch, due in every_two if due] == [2, 4, 5]
    _, always = _run(TrainingConfig(epochs=3, checkpoint_interval_s=0))
    assert all(due for _, due in always)


def test_schedule_is_due_after_its_interval() -> None:
    schedule = CheckpointSchedule(every_epochs=None, interval_s=60.0, last_at=0.0)  # 'last' long ago
    assert schedule.due(1, final=False) and not schedule.due(2, final=False) and schedule.due(3, final=True)


def test_resume_starts_after_the_state_epoch() -> None:
    state, seen = _run(
        TrainingConfig(epochs=3), TrainingState(epoch=2, run_key="k", metrics=[{"epoch": 1}, {"epoch": 2}])
    )
    assert [epoch for epoch, _ in seen] == [3] and len(state.metrics) == 3


def test_early_stopping_ends_with_a_checkpoint() -> None:
    # A learning rate of 0 never improves on epoch 1, so patience 2 stops after epoch 3.
    state, seen = _run(
        TrainingConfig(epochs=10, learning_rate=1e-12, early_stopping_patience=2, checkpoint_interval_s=3600)
    )
    assert seen[-1][1] is True and state.epoch - state.best_epoch >= 2 and state.epoch < 10  # type: ignore[operator]


def test_without_validation_rows_the_last_weights_are_kept() -> None:
    state, _ = _run(TrainingConfig(epochs=2), val=False)
    assert math.isnan(state.metrics[0]["val_loss"]) and state.best_weights is None
    model = small_model()
    weights = final_weights(model, state, keep_best=True)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("keep_best", [True, False])
def test_final_weights_best_or_last(keep_best: bool) -> None:
    model = small_model()
    state = TrainingState(0, "k")
    state.observe(1, 1.0, model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    weights = final_weights(model, state, keep_best)
    first = next(iter(model.state_dict()))
    assert torch.equal(weights[first], model.state_dict()[first]) is (not keep_best)
