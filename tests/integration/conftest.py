"""One local Ray instance, one local Ray cluster, one trained model and one generation for the whole session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PENGUINS, REPO
from tests.integration.ray_cluster import local_ray_cluster_fixture  # noqa: F401 (registered here, once)
from vae_pipeline.config import PipelineConfig, parse_config
from vae_pipeline.runtime import ensure_ray, shutdown_ray

# For flows whose evaluation step must run but whose scores no assertion reads: 6 samplers on 100 rows each take
# about half the time of 9 on 300.
QUICK_EVALUATION = {"rows": 100, "temperatures": []}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`vae-pipeline ARGS` as a user runs it: a real subprocess from the repository, its output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    command = [sys.executable, "-m", "vae_pipeline.cli", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


def tiny_config(root: Path, **sections: Any) -> PipelineConfig:
    """A config that trains in seconds on the penguins table."""
    base = {
        "model_url": str(root / "model"),
        "data": {"input_url": PENGUINS, "label_column": "species", "holdout_fraction": 0.2},
        "model": {"latent_dim": 4, "hidden_dims": [32, 32]},
        "training": {"epochs": 40, "batch_size": 64, "learning_rate": 0.005, "beta": 0.5},
        # No learned priors here: tests/integration/test_learned_priors.py trains and uses them.
        "statistics": {
            "reservoir_size": 200,
            "gmm_max_components": 3,
            "hole_draws": 500,
            "priors": {"flow": None, "diffusion": None},
        },
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
    from vae_pipeline.training.job import run_training

    root = tmp_path_factory.mktemp("trained")
    config = tiny_config(root)
    model_url = run_training(config)
    statistics_url = run_statistics(config, model_url=model_url)
    return TrainedModel(root, config, model_url, statistics_url)


@dataclass(frozen=True)
class Generated:
    output: Path
    manifest_url: str

    def copy_to(self, destination: Path) -> Path:
        """A private copy of the dataset, for a test that changes or adds files."""
        shutil.copytree(self.output, destination)
        return destination


@pytest.fixture(scope="session")
def generated(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """The trained model's default generation (3000 rows in 3 shards, seed 5, 2 workers), made once.

    Read it in place; copy it (`copy_to`) before changing anything in it.
    """
    from vae_pipeline.generation.job import run_generation

    output = tmp_path_factory.mktemp("generated") / "synthetic"
    config = trained.config.with_overrides({"generation.output_url": str(output)})
    url = run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)
    return Generated(output, url)
