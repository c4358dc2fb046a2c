"""worker.py with columns outside the matrix: ids unique across every shard of a dataset, rare categories drawn
from the shard's own seed. An untrained model is enough: ids and draws do not depend on the weights."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.unit.test_bundle import PENGUINS
from vae_pipeline.bundle import ModelBundle
from vae_pipeline.config import DataConfig, PipelineConfig, StatisticsConfig, sampler_config
from vae_pipeline.generation.plan import plan_shards
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.models.mlp_vae import MLPVAEConfig, build_model
from vae_pipeline.posterior.aggregate import finalize_posterior
from vae_pipeline.posterior.stats import PosteriorStats
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.split import row_keys
from vae_pipeline.transforms import TableTransform


@pytest.fixture(scope="module")
def generator() -> tuple[ShardGenerator, pa.Table]:
    penguins = pq.read_table(PENGUINS).select(["species", "island", "bill_length_mm"])
    n = penguins.num_rows
    table = penguins.append_column("tag", pa.array([f"PG-{i:04d}" for i in range(1, n + 1)])).append_column(
        "visit",
        pa.array([f"v{i % 120:03d}" for i in range(n)]),  # 120 values: a long tail beyond 20 slots
    )
    config = DataConfig(fit_sample_rows=200, max_modes=2, max_categories=20)
    transform = TableTransform.fit(table.to_batches(max_chunksize=100), table.schema, config)
    torch.manual_seed(0)
    model_config = MLPVAEConfig(data_dim=transform.output_dim, latent_dim=2, hidden_dims=[8], spans=transform.spans)
    model = build_model(model_config).eval()
    stats = PosteriorStats.empty(latent_dim=2, n_classes=0, reservoir_size=200)
    with torch.inference_mode():
        mu, logvar = model.encode(torch.from_numpy(transform.transform(table)), None)
    stats.update(mu.double().numpy(), logvar.double().numpy(), row_keys(table, seed=0), None)
    posterior = finalize_posterior(
        stats, class_labels=[], config=StatisticsConfig(hole_draws=200, gmm_max_components=1), model_fingerprint="x"
    )
    bundle = ModelBundle(model, model_config, transform, PipelineConfig(data=config))
    sampler = build_sampler(sampler_config(name="gaussian")).fit(posterior)
    return ShardGenerator(bundle, posterior, sampler, batch_rows=64), table


def test_ids_are_unique_across_shards_and_fresh(generator: tuple[ShardGenerator, pa.Table]) -> None:
    shard_generator, table = generator
    assert shard_generator.bundle.transform.column_kinds()["tag"] == "id"
    shards = [shard_generator.generate(spec) for spec in plan_shards(rows=500, rows_per_shard=150, seed=4)]
    tags = [tag for shard in shards for tag in shard.column("tag").to_pylist()]
    assert tags == [f"PG-{i:04d}" for i in range(345, 845)]  # after the training ids, in dataset order
    assert all(shard.schema == table.schema for shard in shards)


def test_rare_draws_come_from_the_shard_seed(generator: tuple[ShardGenerator, pa.Table]) -> None:
    shard_generator, table = generator
    spec = plan_shards(rows=400, rows_per_shard=400, seed=9)[0]
    visits = shard_generator.generate(spec).column("visit").to_pylist()
    assert visits == shard_generator.generate(spec).column("visit").to_pylist()
    assert set(visits) <= set(table.column("visit").to_pylist())
    assert all(re.fullmatch(r"v\d{3}", visit) for visit in visits)
    assert len(set(visits)) > 20  # members of the rare class appear, not only the 19 frequent values
    other = plan_shards(rows=400, rows_per_shard=400, seed=10)[0]
    assert visits != shard_generator.generate(other).column("visit").to_pylist()
