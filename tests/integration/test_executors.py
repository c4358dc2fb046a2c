"""The same step on both executors: in this process and on Ray, the same code gives the same results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import TrainedModel, tiny_config
from vae_pipeline.bundle import load_bundle
from vae_pipeline.posterior.aggregate import load_posterior
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.training.job import run_training

ARRAYS = ("mean", "covariance", "kl_per_dim", "class_counts", "class_means", "class_covariances", "gmm_means")


def test_statistics_and_learned_priors_are_identical_on_both_executors(trained: TrainedModel, tmp_path: Path) -> None:
    urls = {}
    priors = {"flow": {"epochs": 3}, "diffusion": {"epochs": 3, "hidden": 32}}
    for executor in ("local", "ray"):  # on Ray, each prior trains in its own task from the stored statistics
        config = trained.config.with_overrides({"statistics.executor": executor, "statistics.priors": priors})
        urls[executor] = run_statistics(config, trained.model_url, str(tmp_path / executor))
    here, on_ray = (load_posterior(urls[name]) for name in ("local", "ray"))
    assert here.count == on_ray.count and here.summary() == on_ray.summary()
    np.testing.assert_array_equal(here.reservoir_mu, on_ray.reservoir_mu)  # the same rows, bit for bit
    for name in ARRAYS:  # one batch each way here; different batch boundaries would move only the last bits
        np.testing.assert_allclose(getattr(here, name), getattr(on_ray, name), rtol=1e-12, atol=1e-12, err_msg=name)
    for name in priors:  # the same seeded draws on one thread each: the same weights, byte for byte
        weights = [Path(url, "priors", name, "weights.safetensors").read_bytes() for url in urls.values()]
        assert weights[0] == weights[1], name


def test_training_metrics_agree_on_both_executors(ray_instance: None, tmp_path: Path) -> None:
    metrics = {}
    for executor in ("local", "ray"):
        config = tiny_config(tmp_path / executor, training={"epochs": 8, "executor": executor})
        metrics[executor] = load_bundle(run_training(config)).metrics
    here, on_ray = metrics["local"], metrics["ray"]
    assert [m["epoch"] for m in here] == [m["epoch"] for m in on_ray] == list(range(1, 9))
    # Same model, data, seed and batch size; only the shuffles differ (a random permutation here, Ray Data's
    # local shuffle buffer there), so the curves track each other epoch by epoch (within 3% over the first six
    # epochs here) and then drift apart as any two shuffles do.
    for ours, theirs in zip(here[:6], on_ray[:6], strict=True):
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=0.05), ours["epoch"]
    assert here[-1]["val_loss"] < 0.85 * here[0]["val_loss"] and on_ray[-1]["val_loss"] < 0.85 * on_ray[0]["val_loss"]


def test_an_interrupted_local_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    first = tiny_config(tmp_path, training={"epochs": 2, "run_name": "resumable", "executor": "local"})
    run_training(first)
    two_epochs = load_bundle(first.model_url).metrics
    run_training(first.with_overrides({"training.epochs": 3}))
    three_epochs = load_bundle(first.model_url).metrics
    assert [m["epoch"] for m in three_epochs] == [1, 2, 3] and three_epochs[:2] == two_epochs
    store = tmp_path / "model" / "checkpoints" / "resumable"
    assert sorted(p.name for p in store.iterdir() if p.name.startswith("epoch-")) == ["epoch-00003"]
