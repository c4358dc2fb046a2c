"""worker.py: a shard spec -> an Arrow table in the training schema, from a tiny real bundle (no Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from tests.unit.test_bundle import fit_tiny_bundle, pipeline_config
from vae_pipeline.bundle import ModelBundle, load_bundle, save_bundle
from vae_pipeline.config import SamplerConfig, StatisticsConfig, sampler_config
from vae_pipeline.generation import worker
from vae_pipeline.generation.plan import ShardSpec, plan_shards
from vae_pipeline.generation.worker import ShardGenerator, _batch_sizes
from vae_pipeline.posterior.aggregate import AggregatePosterior, finalize_posterior
from vae_pipeline.posterior.stats import PosteriorStats
from vae_pipeline.samplers.base import LatentSampler
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.split import row_keys

CATEGORICAL = ["species", "island", "sex", "year"]


@dataclass
class Fitted:
    bundle: ModelBundle
    posterior: AggregatePosterior
    table: pa.Table


def fit_everything(tmp_path: Path, *, conditional: bool) -> Fitted:
    """Bundle saved and reloaded from disk, statistics computed batch by batch as the statistics job does."""
    tiny = fit_tiny_bundle(conditional=conditional)
    url = str(tmp_path / "model")
    save_bundle(url, tiny.model, tiny.model_config, tiny.transform, pipeline_config(conditional), tiny.metrics)
    bundle = load_bundle(url)
    transform = bundle.transform
    n_classes = len(transform.label_classes) if conditional else 0
    stats = PosteriorStats.empty(latent_dim=4, n_classes=n_classes, reservoir_size=1_000)
    for batch in tiny.source.batches(100):
        labels = transform.label_codes(batch) if conditional else None
        condition = torch.from_numpy(transform.condition(labels)) if labels is not None else None
        with torch.inference_mode():
            mu, logvar = bundle.model.encode(torch.from_numpy(transform.transform(batch)), condition)
        stats.update(mu.double().numpy(), logvar.double().numpy(), row_keys(batch, seed=0), labels)
    posterior = finalize_posterior(
        stats,
        class_labels=transform.label_classes if conditional else [],
        config=StatisticsConfig(hole_draws=500, gmm_max_components=3),
        model_fingerprint=bundle.fingerprint,
    )
    return Fitted(bundle, posterior, tiny.table)


def generator_for(fitted: Fitted, sampler: SamplerConfig, batch_rows: int = 64) -> ShardGenerator:
    return ShardGenerator(fitted.bundle, fitted.posterior, build_sampler(sampler).fit(fitted.posterior), batch_rows)


# ------------------------------------------------------------------ batch sizes


@pytest.mark.parametrize(
    ("total", "batch_rows", "sizes"),
    [(150, 64, [64, 64, 22]), (128, 64, [64, 64]), (5, 2, [2, 2, 1]), (1, 64, [1]), (64, 100, [64]), (0, 8, [])],
)
def test_batch_sizes(total: int, batch_rows: int, sizes: list[int]) -> None:
    assert _batch_sizes(total, batch_rows) == sizes


# ------------------------------------------------------------------ unconditional


@pytest.mark.parametrize("name", ["prior", "gaussian", "gmm", "empirical"])
def test_shard_rows_and_exact_schema(fitted: Fitted, name: str) -> None:
    table = generator_for(fitted, sampler_config(name=name)).generate(ShardSpec(index=0, rows=150, seed=3))
    assert table.num_rows == 150  # 64 + 64 + 22
    assert table.schema.equals(fitted.table.schema)
    assert table.schema.names == fitted.table.schema.names
    assert [f.type for f in table.schema] == [f.type for f in fitted.table.schema]
    assert all(chunked.num_chunks == 1 for chunked in table.columns)


@pytest.mark.parametrize("name", ["gaussian", "empirical"])
def test_categories_come_from_training_data(fitted: Fitted, name: str) -> None:
    table = generator_for(fitted, sampler_config(name=name)).generate(ShardSpec(index=0, rows=150, seed=3))
    for column in CATEGORICAL:
        seen = set(pc.unique(table.column(column)).to_pylist())
        training = set(pc.unique(fitted.table.column(column)).to_pylist())
        assert seen <= training, column
    assert table.column("species").null_count == 0  # no null category was learned for species


def test_continuous_values_within_training_range(fitted: Fitted) -> None:
    table = generator_for(fitted, sampler_config(name="gaussian")).generate(ShardSpec(index=0, rows=150, seed=3))
    for column in ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]:
        values = table.column(column).drop_null()
        lo, hi = pc.min_max(fitted.table.column(column)).values()
        span = hi.as_py() - lo.as_py()
        assert pc.min(values).as_py() >= lo.as_py() - span, column
        assert pc.max(values).as_py() <= hi.as_py() + span, column


def test_null_rates_plausible(fitted: Fitted) -> None:
    table = generator_for(fitted, sampler_config(name="gaussian")).generate(ShardSpec(index=0, rows=1_000, seed=0))
    # Training: 11/344 null 'sex', 2/344 null in the four measurements. Loose bounds: a 5-epoch model.
    for column in table.column_names:
        assert table.column(column).null_count / table.num_rows < 0.5, column
    assert table.column("year").null_count == 0


def test_same_spec_same_table(fitted: Fitted) -> None:
    spec = ShardSpec(index=2, rows=150, seed=3)
    first = generator_for(fitted, sampler_config(name="gaussian")).generate(spec)
    second = generator_for(fitted, sampler_config(name="gaussian")).generate(spec)  # a fresh worker
    assert first.equals(second)
    assert generator_for(fitted, sampler_config(name="gaussian")).generate(spec).equals(first)


def test_reused_generator_is_stateless(fitted: Fitted) -> None:
    generator = generator_for(fitted, sampler_config(name="gmm"))
    spec = ShardSpec(index=0, rows=70, seed=1)
    first = generator.generate(spec)
    generator.generate(ShardSpec(index=1, rows=70, seed=1))
    assert generator.generate(spec).equals(first)


def test_different_index_or_seed_different_rows(fitted: Fitted) -> None:
    generator = generator_for(fitted, sampler_config(name="gaussian"))
    base = generator.generate(ShardSpec(index=0, rows=150, seed=3))
    other_index = generator.generate(ShardSpec(index=1, rows=150, seed=3))
    other_seed = generator.generate(ShardSpec(index=0, rows=150, seed=4))
    for other in (other_index, other_seed):
        assert not other.equals(base)
        # Continuous values are practically never equal between independent draws.
        same = pc.equal(other.column("bill_length_mm"), base.column("bill_length_mm")).to_numpy(zero_copy_only=False)
        assert np.mean(same.astype(bool)) < 0.5


def test_shards_of_a_plan_concatenate(fitted: Fitted) -> None:
    generator = generator_for(fitted, sampler_config(name="gaussian"), batch_rows=2)
    shards = [generator.generate(spec) for spec in plan_shards(rows=5, rows_per_shard=2, seed=0)]
    assert [s.num_rows for s in shards] == [2, 2, 1]
    assert pa.concat_tables(shards).schema.equals(fitted.table.schema)


# ------------------------------------------------------------------ conditional


def test_conditional_sampler_only_the_requested_class(fitted_conditional: Fitted) -> None:
    sampler = sampler_config(name="conditional", classes={"Adelie": 1.0})
    table = generator_for(fitted_conditional, sampler).generate(ShardSpec(index=0, rows=150, seed=3))
    assert table.num_rows == 150
    assert table.schema.equals(fitted_conditional.table.schema)
    assert set(table.column("species").to_pylist()) == {"Adelie"}


def test_conditional_sampler_shares(fitted_conditional: Fitted) -> None:
    sampler = sampler_config(name="conditional", classes={"Gentoo": 3.0, "Chinstrap": 1.0})
    table = generator_for(fitted_conditional, sampler).generate(ShardSpec(index=0, rows=800, seed=0))
    counts = {row["values"]: row["counts"] for row in pc.value_counts(table.column("species")).to_pylist()}
    assert set(counts) == {"Gentoo", "Chinstrap"}
    assert 0.68 < counts["Gentoo"] / 800 < 0.82  # 0.75 expected, sd about 0.015


def test_cvae_with_unconditional_sampler_uses_training_shares(fitted_conditional: Fitted) -> None:
    table = generator_for(fitted_conditional, sampler_config(name="gaussian")).generate(
        ShardSpec(index=0, rows=1_000, seed=0)
    )
    counts = {row["values"]: row["counts"] for row in pc.value_counts(table.column("species")).to_pylist()}
    # Training: Adelie 152, Chinstrap 68, Gentoo 124 of 344.
    assert abs(counts["Adelie"] / 1_000 - 152 / 344) < 0.06
    assert abs(counts["Chinstrap"] / 1_000 - 68 / 344) < 0.06
    assert abs(counts["Gentoo"] / 1_000 - 124 / 344) < 0.06


def test_conditional_same_spec_same_table(fitted_conditional: Fitted) -> None:
    sampler = sampler_config(name="conditional")
    spec = ShardSpec(index=4, rows=100, seed=9)
    assert (
        generator_for(fitted_conditional, sampler)
        .generate(spec)
        .equals(generator_for(fitted_conditional, sampler).generate(spec))
    )


# ------------------------------------------------------------------ the fast path


class _Unfolded(LatentSampler):
    """Wraps a sampler and hides its affine form, so the worker calls `sample` and decodes z itself."""

    def __init__(self, inner: LatentSampler) -> None:
        super().__init__()
        self.inner = inner

    def _fit(self, posterior: AggregatePosterior) -> None:
        pass

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        sample = self.inner.sample(n, generator=generator)
        return sample.z, sample.classes


@pytest.mark.parametrize("conditional", [False, True])
def test_folded_gaussian_sampler_draws_the_same_rows(
    fitted: Fitted, fitted_conditional: Fitted, conditional: bool
) -> None:
    data = fitted_conditional if conditional else fitted
    inner = build_sampler(sampler_config(name="gaussian")).fit(data.posterior)
    spec = ShardSpec(index=0, rows=2_000, seed=1)
    folded = ShardGenerator(data.bundle, data.posterior, inner, 256).generate(spec)
    unfolded = ShardGenerator(data.bundle, data.posterior, _Unfolded(inner).fit(data.posterior), 256).generate(spec)
    assert folded.schema.equals(unfolded.schema)
    # The decoder sees the same latents up to float32 rounding; a draw near a boundary may rarely flip.
    for name in folded.column_names:
        same = pc.equal(folded.column(name), unfolded.column(name)).to_numpy(zero_copy_only=False)
        assert np.mean(np.nan_to_num(same.astype(float), nan=1.0)) > 0.98, name


def test_shards_longer_than_a_chunk_draw_as_one_pass(fitted: Fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ShardSpec(index=3, rows=1_000, seed=2)
    whole = generator_for(fitted, sampler_config(name="gmm"), batch_rows=64).generate(spec)
    monkeypatch.setattr(worker, "_CHUNK_ROWS", 150)  # chunks of 128 rows (two batches), the last one 104
    chunked = generator_for(fitted, sampler_config(name="gmm"), batch_rows=64).generate(spec)
    assert chunked.equals(whole)
    assert all(column.num_chunks == 1 for column in chunked.columns)
