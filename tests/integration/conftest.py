"""One local Ray instance and one trained model for the whole integration session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PENGUINS
from vae_pipeline.config import PipelineConfig, parse_config
from vae_pipeline.runtime import ensure_ray, shutdown_ray


def tiny_config(root: Path, **sections: Any) -> PipelineConfig:
    """A config that trains in seconds on the penguins table."""
    base = {
        "model_url": str(root / "model"),
        "data": {"input_url": PENGUINS, "label_column": "species", "holdout_fraction": 0.2},
        "model": {"latent_dim": 4, "hidden_dims": [32, 32]},
        "training": {"epochs": 40, "batch_size": 64, "learning_rate": 0.005, "beta": 0.5},
        "statistics": {"reservoir_size": 200, "gmm_max_components": 3, "hole_draws": 500},
        "sampler": {"name": "gaussian"},
        "evaluation": {"rows": 300, "temperatures": [0.8], "min_holdout_rows": 20},
        "generation": {"rows": 3000, "rows_per_shard": 1000, "output_url": str(root / "synthetic"), "seed": 5},
        "ray": {"num_cpus": 2},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(name, {}).update(values)
        else:
            base[name] = values
    return parse_config(base)


@dataclass(frozen=True)
class TrainedModel:
    root: Path
    config: PipelineConfig
    model_url: str
    statistics_url: str


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[None]:
    ensure_ray(PipelineConfig().ray.model_copy(update={"num_cpus": 2}))
    yield
    shutdown_ray()


@pytest.fixture(scope="session")
def trained(ray_instance: None, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Train and compute statistics once; tests generate from it into their own outputs."""
    from vae_pipeline.posterior.job import run_statistics
    from vae_pipeline.training.ray_train import run_training

    root = tmp_path_factory.mktemp("trained")
    config = tiny_config(root)
    model_url = run_training(config)
    statistics_url = run_statistics(config, model_url=model_url)
    return TrainedModel(root, config, model_url, statistics_url)
