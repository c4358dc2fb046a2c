"""Every learned prior through one check: seeded draws, a stored-and-reloaded prior draws the same, moments near
the aggregate posterior's, class restriction, the held-out log-likelihood beside the closed forms', and a prior
stored for other statistics refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.unit.samplers.synthetic import synthetic_posterior
from vae_pipeline import executor
from vae_pipeline.config import sampler_config
from vae_pipeline.errors import ArtifactMismatchError, ConfigError
from vae_pipeline.posterior.aggregate import AggregatePosterior, save_posterior
from vae_pipeline.samplers.learned import LearnedSampler
from vae_pipeline.samplers.likelihood import held_out_log_likelihood
from vae_pipeline.samplers.registry import LEARNED, build_sampler
from vae_pipeline.samplers.store import PRIOR_FORMAT, fitted_sampler, prior_digest, save_prior

# Small budgets: the contract is about behaviour, not quality (benchmarks/quality.py measures that).
SETTINGS = {"flow": {"epochs": 15}, "diffusion": {"epochs": 40, "steps": 20}}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with executor.one_thread():
        yield


@pytest.fixture(scope="module")
def posterior() -> AggregatePosterior:
    return synthetic_posterior(rows=3000, reservoir=1000)


@pytest.fixture(scope="module", params=sorted(LEARNED))
def trained(request: pytest.FixtureRequest, posterior: AggregatePosterior) -> LearnedSampler:
    name = request.param
    return LEARNED[name](seed=3, conditional=True, **SETTINGS[name]).fit(posterior)


def test_seeded_draws_are_identical(trained: LearnedSampler) -> None:
    first = trained.sample(500, generator=np.random.default_rng(7))
    again = trained.sample(500, generator=np.random.default_rng(7))

    assert first.z.tobytes() == again.z.tobytes() and first.z.dtype == np.float32
    assert first.classes is not None and np.array_equal(first.classes, again.classes)


def test_a_stored_prior_reloads_and_draws_the_same(
    trained: LearnedSampler, posterior: AggregatePosterior, tmp_path: Path
) -> None:
    statistics_url = str(tmp_path / "statistics")
    save_posterior(posterior, statistics_url)
    save_prior(statistics_url, trained, posterior, seconds=1.0, held=None)

    loaded = fitted_sampler(sampler_config(trained.kind), posterior, statistics_url)

    assert isinstance(loaded, LearnedSampler) and loaded is not trained
    expected = trained.sample(300, generator=np.random.default_rng(1)).z
    assert np.array_equal(loaded.sample(300, generator=np.random.default_rng(1)).z, expected)
    assert prior_digest(statistics_url, trained.kind) is not None


def test_draws_match_the_aggregate_posterior_moments(trained: LearnedSampler, posterior: AggregatePosterior) -> None:
    z = trained.sample(8000, generator=np.random.default_rng(2)).z

    spread = np.sqrt(np.diag(posterior.covariance))
    assert np.all(np.abs(z.mean(axis=0) - posterior.mean) < 0.25 * spread)
    assert np.allclose(np.cov(z.T), posterior.covariance, atol=0.35 * spread.max() ** 2)


def test_a_class_restricted_prior_draws_near_that_class(trained: LearnedSampler, posterior: AggregatePosterior) -> None:
    for code in range(3):
        z = trained.restricted_to(code).sample(2000, generator=np.random.default_rng(code)).z
        nearest = np.argmin(np.linalg.norm(posterior.class_means[None] - z.mean(axis=0)[:, None].T, axis=2))
        assert nearest == code


def test_held_out_log_likelihood_sits_beside_the_closed_forms(
    trained: LearnedSampler, posterior: AggregatePosterior
) -> None:
    scores = {
        name: held_out_log_likelihood(
            sampler_config(name), build_sampler(sampler_config(name)).fit(posterior), posterior, 3
        )
        for name in ("prior", "gaussian", "gmm")
    }
    learned = held_out_log_likelihood(sampler_config(trained.kind), trained, posterior, 3)

    assert scores["gmm"] > scores["gaussian"] > scores["prior"]  # three separated classes
    if trained.kind == "flow":
        assert learned is not None and learned > scores["gaussian"]
    else:
        assert learned is None  # a diffusion model's density is intractable


def test_a_prior_stored_for_other_statistics_is_refused(
    trained: LearnedSampler, posterior: AggregatePosterior, tmp_path: Path
) -> None:
    statistics_url = str(tmp_path / "statistics")
    save_posterior(posterior, statistics_url)
    save_prior(statistics_url, trained, posterior, seconds=1.0, held=None)
    save_posterior(synthetic_posterior(rows=3000, reservoir=1000, seed=1), statistics_url)  # recomputed statistics

    with pytest.raises(ArtifactMismatchError, match="was trained for other statistics"):
        fitted_sampler(sampler_config(trained.kind), posterior, statistics_url)


def test_a_prior_of_an_older_format_is_refused_with_the_way_out(
    trained: LearnedSampler, posterior: AggregatePosterior, tmp_path: Path
) -> None:
    statistics_url = str(tmp_path / "statistics")
    save_posterior(posterior, statistics_url)
    save_prior(statistics_url, trained, posterior, seconds=1.0, held=None)
    meta = tmp_path / "statistics" / "priors" / trained.kind / "prior.json"
    meta.write_text(meta.read_text().replace(PRIOR_FORMAT, "vae-pipeline/prior/v1"))

    with pytest.raises(
        ArtifactMismatchError, match=r"is not a vae-pipeline/prior/v2 prior; rerun `vae-pipeline stats`"
    ):
        fitted_sampler(sampler_config(trained.kind), posterior, statistics_url)


def test_a_missing_prior_names_the_setting_that_trains_it(posterior: AggregatePosterior, tmp_path: Path) -> None:
    save_posterior(posterior, str(tmp_path))

    with pytest.raises(ConfigError, match=r"set statistics\.priors\.flow"):
        fitted_sampler(sampler_config("flow"), posterior, str(tmp_path))
