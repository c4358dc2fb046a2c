"""finalize_posterior: moments, GMM choice, KL and hole diagnostics; save/load round trips."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from vae_pipeline import storage
from vae_pipeline.config import StatisticsConfig
from vae_pipeline.errors import DataError, StorageError
from vae_pipeline.posterior.aggregate import (
    AggregatePosterior,
    finalize_posterior,
    load_posterior,
    log_mixture_density,
    positive_definite,
    save_posterior,
)
from vae_pipeline.posterior.stats import PosteriorStats


def _stats(mu: np.ndarray, logvar: np.ndarray, labels: np.ndarray | None = None, classes: int = 0) -> PosteriorStats:
    rng = np.random.default_rng(99)
    stats = PosteriorStats.empty(mu.shape[1], classes, 3000)
    keys = rng.integers(0, np.iinfo(np.uint64).max, size=mu.shape[0], dtype=np.uint64, endpoint=True)
    stats.update(mu, logvar, keys, labels)
    return stats


def _finalize(stats: PosteriorStats, labels: list | None = None, **config: object) -> AggregatePosterior:
    settings = {"gmm_max_components": 3, "hole_draws": 4000, "seed": 0, **config}
    return finalize_posterior(
        stats, class_labels=labels or [], config=StatisticsConfig(**settings), model_fingerprint="abc123"
    )


def _labelled_posterior() -> AggregatePosterior:
    """Three classes with labels of mixed JSON types; class 2 has a single row."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=2000)
    labels[0] = 2
    mu = rng.normal(size=(2000, 2)) + labels[:, None] * 2.0
    return _finalize(_stats(mu, np.full((2000, 2), -2.0), labels, classes=3), labels=["a", 1, True])


@pytest.fixture(scope="module")
def labelled() -> AggregatePosterior:
    return _labelled_posterior()


def test_moments_match_stats(labelled: AggregatePosterior) -> None:
    assert labelled.count == 2000 and labelled.latent_dim == 2
    assert labelled.class_counts[2] == 1
    # A class with fewer than two rows borrows the global covariance, and keeps its one row's mean.
    np.testing.assert_allclose(labelled.class_covariances[2], labelled.covariance)
    assert labelled.active_units == 2 and labelled.active_mask.tolist() == [True, True]
    for cov in (labelled.covariance, *labelled.class_covariances, *labelled.gmm_covariances):
        np.linalg.cholesky(cov)


def test_gmm_picks_several_components_on_bimodal_latent() -> None:
    rng = np.random.default_rng(1)
    side = rng.choice([-4.0, 4.0], size=(3000, 1))
    mu = np.column_stack([side[:, 0], np.zeros(3000)]) + rng.normal(0, 0.5, size=(3000, 2))
    posterior = _finalize(_stats(mu, np.full((3000, 2), -3.0)), gmm_max_components=4)
    assert posterior.gmm_components > 1
    assert sorted(np.round(posterior.gmm_means[:, 0]).tolist())[0] <= -3
    unimodal = _finalize(_stats(rng.normal(size=(3000, 2)), np.full((3000, 2), -3.0)), gmm_max_components=4)
    assert unimodal.gmm_components == 1


def test_no_holes_and_no_kl_when_q_equals_prior() -> None:
    """μ ~ N(0, 0.9²) and σ² = 0.19 give q(z) = N(0, 0.81 + 0.19) = N(0, 1), the prior."""
    rng = np.random.default_rng(2)
    posterior = _finalize(_stats(rng.normal(0, 0.9, size=(3000, 2)), np.full((3000, 2), np.log(0.19))))
    assert abs(posterior.kl_to_prior_estimate) < 0.05
    assert posterior.hole_fraction == pytest.approx(0.01, abs=0.01)


def test_holes_and_kl_when_q_is_concentrated() -> None:
    rng = np.random.default_rng(3)
    posterior = _finalize(_stats(rng.normal(3, 0.1, size=(3000, 2)), np.full((3000, 2), np.log(0.01))))
    assert posterior.kl_to_prior_estimate > 5
    assert posterior.hole_fraction > 0.9


def test_log_mixture_density_matches_direct_formula() -> None:
    rng = np.random.default_rng(4)
    mu, logvar, z = rng.normal(size=(7, 3)), rng.normal(-1, 0.3, size=(7, 3)), rng.normal(size=(5, 3))
    direct = -0.5 * (((z[:, None] - mu) ** 2) / np.exp(logvar) + logvar + np.log(2 * np.pi)).sum(axis=2)
    expected = np.log(np.exp(direct).mean(axis=1))
    np.testing.assert_allclose(log_mixture_density(z, mu, logvar), expected, rtol=1e-10)


def test_positive_definite_adds_jitter_only_when_needed() -> None:
    good = np.array([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(positive_definite(good), good)
    singular = np.ones((2, 2))
    fixed = positive_definite(singular)
    np.linalg.cholesky(fixed)
    assert np.abs(fixed - singular).max() < 1e-3


def test_finalize_is_deterministic(labelled: AggregatePosterior) -> None:
    _assert_same(_labelled_posterior(), labelled)


def test_finalize_rejects_wrong_label_count_and_empty_stats() -> None:
    stats = _stats(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(DataError, match="class labels"):
        _finalize(stats, labels=["x"])
    with pytest.raises(DataError, match="no rows"):
        _finalize(PosteriorStats.empty(2, 0, 10))


def _assert_same(a: AggregatePosterior, b: AggregatePosterior) -> None:
    for name, value in vars(a).items():
        other = getattr(b, name)
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype, name
            np.testing.assert_array_equal(value, other, err_msg=name)
        else:
            assert value == other, name


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_save_load_round_trip(kind: str, tmp_path, labelled: AggregatePosterior) -> None:
    url = str(tmp_path / "stats") if kind == "local" else f"memory://posterior-{uuid.uuid4().hex}/stats"
    save_posterior(labelled, url)
    assert storage.exists(storage.join_url(url, "posterior.safetensors"))
    document = storage.read_json(storage.join_url(url, "posterior.json"))
    assert document["model_fingerprint"] == "abc123" and document["class_labels"] == ["a", 1, True]
    loaded = load_posterior(url)
    _assert_same(loaded, labelled)
    assert loaded.reservoir_labels.dtype == np.int64 and loaded.active_mask.dtype == np.bool_


def test_load_missing_says_to_run_stats(tmp_path) -> None:
    with pytest.raises(StorageError, match="vae-pipeline stats"):
        load_posterior(str(tmp_path / "nothing"))


def test_load_without_arrays_says_to_rerun(tmp_path, labelled: AggregatePosterior) -> None:
    url = str(tmp_path / "stats")
    save_posterior(labelled, url)
    storage.remove(storage.join_url(url, "posterior.safetensors"))
    with pytest.raises(StorageError, match="vae-pipeline stats"):
        load_posterior(url)


def test_summary_is_small_json(labelled: AggregatePosterior) -> None:
    summary = labelled.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["count"] == 2000 and summary["classes"] == 3 and summary["latent_dim"] == 2
    assert set(summary) == {
        "count",
        "latent_dim",
        "active_units",
        "kl_to_prior_estimate",
        "hole_fraction",
        "gmm_components",
        "classes",
    }
