"""Asking for resources the local Ray instance does not have is a one-line error, never a silent wait or CPU run.

GPUs on a cluster without them: an error after a bounded wait for the autoscaler when `ray.gpu_wait_s` is set, with
nothing written (this machine and CI have no GPU). A streamed input with no CPU left for reading: an error that
names the CPUs needed, where training used to wait forever.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import TrainedModel, tiny_config
from vae_pipeline.errors import ConfigError
from vae_pipeline.generation.job import run_generation
from vae_pipeline.resources import cluster_gpus, require_gpus
from vae_pipeline.training import ray_train
from vae_pipeline.training.job import run_training

pytestmark = pytest.mark.slow


def test_present_gpus_are_enough(ray_instance: None) -> None:
    assert cluster_gpus() == 0
    require_gpus(0)  # nothing asked, nothing to wait for


def test_waiting_for_the_autoscaler_is_bounded_and_named(ray_instance: None) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"has 0 GPU\(s\) for 2 generation worker\(s\) after waiting 1.5s"):
        require_gpus(2, wait_s=1.5, what="generation worker")
    assert 1.5 <= time.monotonic() - started < 10


def test_generation_on_gpus_that_are_not_there_leaves_the_output_untouched(
    trained: TrainedModel, tmp_path: Path
) -> None:
    output = tmp_path / "synthetic"
    config = trained.config.with_overrides({"generation.output_url": str(output), "generation.use_gpu": True})
    with pytest.raises(ConfigError, match=r"use_gpu is true but the Ray cluster has 0 GPU\(s\) for 2 generation"):
        run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)
    assert not output.exists()


def test_training_on_gpus_that_are_not_there_fails_before_any_checkpoint(ray_instance: None, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, training={"use_gpu": True, "epochs": 1}, ray={"num_cpus": 2, "gpu_wait_s": 1})
    with pytest.raises(ConfigError, match=r"0 GPU\(s\) for 1 training worker\(s\) after waiting 1s"):
        run_training(config)
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").rglob("*.safetensors"))


def test_streaming_training_without_a_cpu_for_reading_is_refused(
    ray_instance: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_train, "_MATERIALIZE_BYTES", 0)  # as if the input were too large to keep in memory
    config = tiny_config(tmp_path, training={"epochs": 1, "executor": "ray"})  # the shared instance has 2 CPUs
    with pytest.raises(ConfigError, match=r"training streams it and needs 3 CPUs .* set ray.num_cpus: 3"):
        run_training(config)
    assert not any((tmp_path / "model").rglob("*.safetensors"))
