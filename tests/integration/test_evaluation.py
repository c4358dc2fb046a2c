"""Which sampler? The evaluation on a trained model, `auto`, the privacy guard and the evaluation's bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import pytest

from tests.conftest import PENGUINS
from tests.integration.conftest import TrainedModel, tiny_config
from vae_pipeline import storage
from vae_pipeline.bundle import load_bundle
from vae_pipeline.config import SamplerConfig, sampler_config
from vae_pipeline.data import open_source
from vae_pipeline.errors import DataError, PrivacyError
from vae_pipeline.evaluation import metrics, privacy
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.evaluation.sampling import sample_real_rows
from vae_pipeline.evaluation.store import default_evaluation_url, read_report
from vae_pipeline.generation.job import load_artifacts, run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.samplers.registry import build_sampler

pytestmark = pytest.mark.slow

SAMPLER_KEYS = {
    "name",
    "sampler",
    "quality",
    "detection_auc",
    "utility",
    "privacy",
    "composite",
    "privacy_ok",
    "privacy_reason",
    "outside_support",
    "per_class",
    "per_class_privacy_ok",
    "per_class_privacy_reason",
    "latent_log_likelihood",
}


@pytest.fixture(scope="module")
def report(trained: TrainedModel) -> dict:
    run_evaluation(trained.config, model_url=trained.model_url, statistics_url=trained.statistics_url)
    found = read_report(trained.model_url)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def auto_output(report: dict, trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generation with `sampler: auto` after the evaluation (3000 rows), read by the tests that need it."""
    output = tmp_path_factory.mktemp("auto") / "out"
    config = trained.config.with_overrides({"sampler.name": "auto", "generation.output_url": str(output)})
    run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)
    return output


def test_the_report_scores_every_sampler_with_stable_keys(report: dict, trained: TrainedModel) -> None:
    assert set(report) >= {
        "format",
        "model_fingerprint",
        "seed",
        "label_column",
        "rows",
        "latent",
        "reference",
        "samplers",
        "choice",
    }
    names = {entry["name"] for entry in report["samplers"]}
    assert names == {
        "prior",
        "gaussian",
        "gaussian-diagonal",
        "gmm",
        "empirical",
        "conditional",
        "prior@T=0.8",
        "gaussian@T=0.8",
        "gmm@T=0.8",
    }
    for entry in report["samplers"]:
        assert set(entry) == SAMPLER_KEYS
        assert 0 <= entry["quality"]["score"] <= 1
        assert 0 <= entry["detection_auc"] <= 1
        assert set(entry["utility"]) >= {"macro_f1", "accuracy"}
        assert set(entry["privacy"]) >= {"dcr_ratio", "exact_copy_share"}
    composites = [entry["composite"] for entry in report["samplers"]]
    assert composites == sorted(composites, reverse=True)
    assert set(report["latent"]) >= {"active_units", "kl_to_prior_estimate", "hole_fraction", "kl_per_dim"}
    assert report["label_column"] == "species"
    assert report["rows"]["synthetic_per_sampler"] == 300
    evaluation_url = default_evaluation_url(trained.model_url)
    markdown = storage.read_bytes(storage.join_url(evaluation_url, "report.md")).decode()
    assert report["choice"]["name"] in markdown.split("## Ranking")[0]  # the verdict names the choice first
    for plot in ("marginals", "latent", "scores"):
        assert storage.read_bytes(storage.join_url(evaluation_url, f"plots/{plot}.png")).startswith(b"\x89PNG")


def test_obviously_bad_synthetic_rows_score_worse_than_the_model(trained: TrainedModel, auto_output: Path) -> None:
    bundle = load_bundle(trained.model_url)
    real = sample_real_rows(open_source(bundle.config.data), bundle.config.data, rows=1000, seed=0)
    holdout, train = real.holdout.to_pandas(), real.train.to_pandas()
    kinds = bundle.transform.scoring_kinds()
    good = pa_ds.dataset(str(auto_output), format="parquet").to_table().to_pandas()
    constant = train.copy()
    for column in constant:
        constant[column] = constant[column].iloc[0]
    # Shuffling keeps every marginal and destroys every relation between columns.
    rng = np.random.default_rng(0)
    shuffled = train.copy()
    for column in shuffled:  # each column its own permutation
        shuffled[column] = shuffled[column].to_numpy()[rng.permutation(len(shuffled))]
    scores = {
        name: (metrics.quality_score(holdout, frame, kinds), metrics.detection_auc(holdout, frame, kinds, seed=0))
        for name, frame in (("good", good), ("constant", constant), ("shuffled", shuffled))
    }
    assert scores["constant"][0]["score"] < scores["good"][0]["score"] - 0.2
    assert scores["constant"][1] > scores["good"][1]
    assert scores["shuffled"][0]["column_pair_trends"] < scores["good"][0]["column_pair_trends"]
    assert scores["shuffled"][1] > scores["good"][1]


def test_auto_generates_with_the_choice_and_records_it(report: dict, auto_output: Path) -> None:
    manifest = read_manifest(str(auto_output))
    assert manifest is not None
    assert manifest.sampler == report["choice"]["sampler"]
    assert manifest.extra["sampler_requested"] == "auto"
    assert manifest.extra["evaluation"]["scores"]["name"] == report["choice"]["name"]


def test_the_privacy_guard_refuses_a_sampler_the_evaluation_flagged(
    report: dict, trained: TrainedModel, tmp_path: Path
) -> None:
    url = storage.join_url(default_evaluation_url(trained.model_url), "report.json")
    original = storage.read_bytes(url)
    flagged = {
        **report,
        "samplers": [
            {**entry, "privacy_ok": False, "privacy_reason": "synthetic rows sit closer to training rows"}
            if entry["name"] == "gmm"
            else entry
            for entry in report["samplers"]
        ],
    }
    storage.write_json(url, flagged)
    try:
        config = trained.config.with_overrides({"sampler.name": "gmm", "generation.output_url": str(tmp_path / "a")})
        with pytest.raises(PrivacyError, match="privacy guard"):
            run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)
        assert not (tmp_path / "a").exists()
        allowed = config.with_overrides({"generation.privacy_guard": False})
        run_generation(allowed, model_url=trained.model_url, statistics_url=trained.statistics_url)
        assert read_manifest(str(tmp_path / "a")) is not None
    finally:
        storage.atomic_write(url, original)


@pytest.fixture(scope="module")
def memorising(ray_instance: None, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A model that reconstructs its training rows closely, on a table where 46% of rows repeat another.

    Five penguin columns (species, island, sex, year, flipper length in whole millimetres), a wide latent, a tiny
    KL weight and many epochs: decoding a training row's posterior gives that row back.
    """
    from vae_pipeline.posterior.job import run_statistics
    from vae_pipeline.training.job import run_training

    root = tmp_path_factory.mktemp("memorising")
    table = pq.read_table(PENGUINS).select(["species", "island", "sex", "year", "flipper_length_mm"])
    pq.write_table(table, root / "repeats.parquet")
    config = tiny_config(
        root,
        data={"input_url": str(root / "repeats.parquet")},
        model={"latent_dim": 8, "hidden_dims": [64, 64]},
        training={"epochs": 150, "batch_size": 32, "beta": 0.01},
    )
    model_url = run_training(config)
    return TrainedModel(root, config, model_url, run_statistics(config, model_url=model_url))


def _privacy_verdict(model: TrainedModel, sampler: SamplerConfig) -> tuple[bool, str | None, dict]:
    """The guard's verdict on `sampler`'s rows, scored as the evaluation job scores them."""
    bundle, posterior = load_artifacts(model.model_url, model.statistics_url)
    settings, data = model.config.evaluation, bundle.config.data
    real = sample_real_rows(open_source(data), data, settings.rows, settings.seed)
    transform = bundle.transform
    index = privacy.index_training_rows(transform.scoring_view(real.train).to_pandas(), transform.scoring_kinds())
    baseline = privacy.real_baseline(index)
    generator = ShardGenerator(bundle, posterior, build_sampler(sampler).fit(posterior))
    rows = transform.scoring_view(generator.generate(ShardSpec(index=0, rows=1000, seed=1))).to_pandas()
    found = privacy.privacy(rows, index, baseline)
    ok, reason = privacy.verdict(
        found, baseline, privacy_margin=settings.privacy_margin, max_copy_excess=settings.max_copy_excess
    )
    return ok, reason, {**found, "real_copy_share": baseline["exact_copy_share"]}


def test_on_a_table_with_repeats_the_guard_passes_a_faithful_sampler_and_refuses_a_replay(
    memorising: TrainedModel,
) -> None:
    ok, reason, found = _privacy_verdict(memorising, sampler_config(name="gaussian"))
    assert ok, (reason, found)
    assert found["exact_copy_share"] > 0.1  # it reproduces rows that real rows repeat too, and may
    ok, reason, found = _privacy_verdict(memorising, sampler_config(name="empirical", temperature=0.01))
    assert not ok, found
    assert reason is not None


def test_evaluation_on_a_table_with_another_schema_is_refused(trained: TrainedModel, tmp_path: Path) -> None:
    other = pq.read_table(PENGUINS).drop_columns(["year"])
    pq.write_table(other, tmp_path / "other.parquet")
    with pytest.raises(DataError, match="does not have the model's columns"):
        run_evaluation(trained.config, model_url=trained.model_url, input_url=str(tmp_path / "other.parquet"))


def test_a_holdout_too_small_says_how_many_rows_are_needed(trained: TrainedModel) -> None:
    config = trained.config.with_overrides({"evaluation.min_holdout_rows": 5000})
    with pytest.raises(DataError, match="needs at least 5000"):
        run_evaluation(config, model_url=trained.model_url)


def test_a_single_class_label_cannot_be_scored(trained: TrainedModel, tmp_path: Path) -> None:
    table = pq.read_table(PENGUINS)
    single = table.set_column(0, "species", pa.array(["Adelie"] * table.num_rows))
    pq.write_table(single, tmp_path / "single.parquet")
    with pytest.raises(DataError, match="single class"):
        run_evaluation(trained.config, model_url=trained.model_url, input_url=str(tmp_path / "single.parquet"))
