"""The pipeline's steps on real Ray with the shipped penguins table: train -> statistics -> generate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import PENGUINS
from tests.integration.conftest import Generated, TrainedModel
from vae_pipeline import storage
from vae_pipeline.bundle import load_bundle, save_bundle
from vae_pipeline.errors import ArtifactMismatchError, OutputExistsError
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.aggregate import load_posterior
from vae_pipeline.posterior.job import encode_rows
from vae_pipeline.split import Split, split_codes

pytestmark = pytest.mark.slow


def generate(trained: TrainedModel, output: Path, **generation: object) -> str:
    config = trained.config.with_overrides(
        {"generation.output_url": str(output), **{f"generation.{k}": v for k, v in generation.items()}}
    )
    return run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)


def read_output(output: Path) -> pa.Table:
    manifest = read_manifest(str(output))
    assert manifest is not None
    return pa_ds.dataset([str(output / s.name) for s in manifest.shards]).to_table()


def test_manifest_describes_the_shards_it_commits(trained: TrainedModel, generated: Generated) -> None:
    url = generated.manifest_url  # what run_generation returned
    manifest = storage.read_json(url)
    assert url.endswith("_manifest.json")
    assert manifest["rows"] == 3000
    assert [s["name"] for s in manifest["shards"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for shard in manifest["shards"]:
        payload = (generated.output / shard["name"]).read_bytes()
        assert hashlib.sha256(payload).hexdigest() == shard["sha256"]
        assert len(payload) == shard["bytes"]
        assert pq.read_metadata(generated.output / shard["name"]).num_rows == shard["rows"]
    assert manifest["bytes"] == sum(s["bytes"] for s in manifest["shards"])
    assert manifest["bundle_fingerprint"] == load_bundle(trained.model_url).fingerprint
    assert manifest["model_url"] == trained.model_url
    assert manifest["statistics_url"] == trained.statistics_url
    assert manifest["sampler"]["name"] == "gaussian"
    assert manifest["seed"] == 5
    assert manifest["config"]["generation"]["rows"] == 3000


def test_output_keeps_the_input_columns_order_and_types(generated: Generated) -> None:
    real = pq.read_table(PENGUINS)
    synthetic = read_output(generated.output)
    assert synthetic.schema.names == real.schema.names
    assert [f.type for f in synthetic.schema] == [f.type for f in real.schema]
    for name in ("species", "island", "sex"):
        assert set(synthetic.column(name).drop_null().to_pylist()) <= set(real.column(name).drop_null().to_pylist())
    assert synthetic.num_rows == 3000


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(
    trained: TrainedModel, generated: Generated, tmp_path: Path
) -> None:
    on_two = read_manifest(str(generated.output))
    assert on_two is not None and len(on_two.extra["workers"]) == 2
    generate(trained, tmp_path / "b", num_workers=1)  # shard bytes do not depend on the number of workers
    generate(trained, tmp_path / "c", seed=6)
    for name in ("part-00000.parquet", "part-00002.parquet"):
        assert (generated.output / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (generated.output / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


@pytest.mark.parametrize("sampler", ["prior", "gaussian", "gmm", "empirical", "conditional"])
def test_every_sampler_generates(trained: TrainedModel, tmp_path: Path, sampler: str) -> None:
    config = trained.config.with_overrides(
        {
            "sampler.name": sampler,
            "generation.output_url": str(tmp_path / sampler),
            "generation.rows": 500,
            "generation.privacy_guard": False,  # empirical needs an evaluation otherwise; see the guard tests
        }
    )
    run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)
    assert read_output(tmp_path / sampler).num_rows == 500


def test_an_output_holding_another_run_is_refused_and_kept(
    trained: TrainedModel, generated: Generated, tmp_path: Path
) -> None:
    output = generated.copy_to(tmp_path / "out")  # seed 5's run
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate(trained, output, seed=2)
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    generate(trained, output, seed=2, overwrite=True)
    manifest = read_manifest(str(output))
    assert manifest is not None and manifest.seed == 2


def test_the_same_run_is_recognised_and_not_redone(trained: TrainedModel, generated: Generated, tmp_path: Path) -> None:
    output = generated.copy_to(tmp_path / "out")  # a finished run of the same config
    stamps = {p: p.stat().st_mtime_ns for p in output.rglob("*")}
    generate(trained, output)
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*")} == stamps


def test_statistics_of_another_model_are_refused(trained: TrainedModel, tmp_path: Path) -> None:
    bundle = load_bundle(trained.model_url)
    with torch.no_grad():
        for parameter in bundle.model.parameters():
            parameter.add_(0.01)
    other_url = str(tmp_path / "other-model")
    save_bundle(other_url, bundle.model, bundle.model_config, bundle.transform, bundle.config, bundle.metrics)
    config = trained.config.with_overrides({"generation.output_url": str(tmp_path / "out")})
    with pytest.raises(ArtifactMismatchError, match="belong to model"):
        run_generation(config, model_url=other_url, statistics_url=trained.statistics_url)
    assert not (tmp_path / "out").exists()


def test_distributed_statistics_equal_the_one_shot_computation(trained: TrainedModel) -> None:
    bundle = load_bundle(trained.model_url)
    table = pq.read_table(PENGUINS)
    table = table.filter(pa.array(split_codes(table, bundle.config.data) == Split.TRAIN))
    labels = bundle.transform.label_codes(table)
    mu, logvar = encode_rows(bundle, table, labels)
    posterior = load_posterior(trained.statistics_url)
    assert posterior.count == table.num_rows
    np.testing.assert_allclose(posterior.mean, mu.mean(axis=0), rtol=1e-9, atol=1e-12)
    expected = np.cov(mu, rowvar=False, bias=True) + np.diag(np.exp(logvar).mean(axis=0))
    np.testing.assert_allclose(posterior.covariance, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(posterior.class_counts, np.bincount(labels, minlength=3))
    assert posterior.model_fingerprint == bundle.fingerprint


def test_training_resumes_from_the_last_checkpoint(ray_instance: None, tmp_path: Path) -> None:
    from tests.integration.conftest import tiny_config
    from vae_pipeline.training.job import run_training

    first = tiny_config(tmp_path, training={"epochs": 2, "run_name": "resumable"})
    run_training(first)
    two_epochs = load_bundle(first.model_url).metrics
    # The third epoch runs data-parallel on two workers (DDP): the checkpoint does not care how many ran before.
    run_training(first.with_overrides({"training.epochs": 3, "training.num_workers": 2}))
    three_epochs = load_bundle(first.model_url).metrics
    assert [m["epoch"] for m in three_epochs] == [1, 2, 3]
    assert three_epochs[:2] == two_epochs  # epochs 1-2 were restored, not retrained


def test_auto_and_an_unvetted_empirical_sampler_need_an_evaluation(trained: TrainedModel, tmp_path: Path) -> None:
    from vae_pipeline.errors import ConfigError, PrivacyError

    bundle = load_bundle(trained.model_url)  # the same model at a URL that holds no evaluation
    unevaluated = str(tmp_path / "unevaluated")
    save_bundle(unevaluated, bundle.model, bundle.model_config, bundle.transform, bundle.config, bundle.metrics)
    cases = (("auto", ConfigError, "vae-pipeline evaluate"), ("empirical", PrivacyError, "no-privacy-guard"))
    for sampler, error, message in cases:
        output = tmp_path / sampler
        config = trained.config.with_overrides({"sampler.name": sampler, "generation.output_url": str(output)})
        with pytest.raises(error, match=message):
            run_generation(config, model_url=unevaluated, statistics_url=trained.statistics_url)
        assert not output.exists()
