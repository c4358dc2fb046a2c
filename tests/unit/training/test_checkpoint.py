"""Training checkpoints: tensors in safetensors, state in JSON, the best epoch's weights kept beside the last."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_pipeline.errors import ConfigError
from vae_pipeline.training.checkpoint import TrainingState, load_model_weights, load_training_state, save_training_state


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_observe_keeps_the_lowest_finite_validation_loss() -> None:
    model, _ = _model_and_optimizer()
    state = TrainingState(epoch=0, run_key="k")
    state.observe(1, 5.0, model)
    first = {k: v.clone() for k, v in state.best_weights.items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    state.observe(2, 7.0, model)  # worse: the best stays epoch 1
    state.observe(3, float("nan"), model)  # not a number never wins
    assert (state.best_epoch, state.best_val_loss) == (1, 5.0)
    assert torch.equal(state.best_weights["weight"], first["weight"])
    state.observe(4, 4.0, model)
    assert state.best_epoch == 4 and torch.equal(state.best_weights["weight"], model.weight.detach())


def test_round_trip_restores_model_optimizer_state_and_best(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    state = TrainingState(epoch=3, run_key="k", metrics=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])
    state.observe(2, 1.5, model)
    with torch.no_grad():
        model.weight.add_(1.0)
    save_training_state(str(tmp_path), model, optimizer, state)

    restored_model, restored_optimizer = torch.nn.Linear(3, 2), None
    restored_optimizer = torch.optim.Adam(restored_model.parameters(), lr=0.1)
    restored = load_training_state(str(tmp_path), restored_model, restored_optimizer, "k")
    assert (restored.epoch, restored.best_epoch, restored.best_val_loss, restored.metrics) == (3, 2, 1.5, state.metrics)
    assert torch.equal(restored_model.weight, model.weight)
    assert restored_optimizer.state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(load_model_weights(str(tmp_path), best=True)["weight"], state.best_weights["weight"])
    assert torch.equal(load_model_weights(str(tmp_path))["weight"], model.weight.detach())


def test_a_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    save_training_state(str(tmp_path), model, optimizer, TrainingState(epoch=1, run_key="old"))
    with pytest.raises(ConfigError, match="run_name"):
        load_training_state(str(tmp_path), model, optimizer, "new")
