"""Every sampler in SAMPLERS through one check: shapes, determinism, moments, temperature, not-fitted error."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.samplers.synthetic import LATENT_DIM, synthetic_posterior
from vae_pipeline.config import SamplerConfig, sampler_config
from vae_pipeline.errors import NotFittedError
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers import SAMPLERS, LatentSample, build_sampler

DRAWS = 20_000
CONFIGS = [sampler_config(name=name) for name in SAMPLERS] + [sampler_config(name="gaussian", diagonal=True)]
IDS = [f"{c.name}{'-diagonal' if getattr(c, 'diagonal', False) else ''}" for c in CONFIGS]


@pytest.fixture(scope="module")
def posterior() -> AggregatePosterior:
    return synthetic_posterior()


def _mixture_moments(weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = weights @ means
    second = np.einsum("k,kij->ij", weights, covs + np.einsum("ki,kj->kij", means, means))
    return mean, second - np.outer(mean, mean)


def target_moments(config: SamplerConfig, post: AggregatePosterior, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The mean and covariance each sampler promises at temperature t."""
    if config.name == "prior":
        return np.zeros(LATENT_DIM), t**2 * np.eye(LATENT_DIM)
    if config.name == "gaussian":
        cov = np.diag(np.diag(post.covariance)) if getattr(config, "diagonal", False) else post.covariance
        return post.mean, t**2 * cov
    if config.name == "gmm":
        return _mixture_moments(post.gmm_weights, post.gmm_means, t**2 * post.gmm_covariances)
    if config.name == "empirical":
        mu = post.reservoir_mu
        return mu.mean(axis=0), np.cov(mu.T, bias=True) + t**2 * np.diag(np.exp(post.reservoir_logvar).mean(axis=0))
    shares = post.class_counts / post.class_counts.sum()
    return _mixture_moments(shares, post.class_means, t**2 * post.class_covariances)


def _draw(config: SamplerConfig, post: AggregatePosterior, seed: int, n: int = DRAWS) -> LatentSample:
    return build_sampler(config).fit(post).sample(n, generator=np.random.default_rng(seed))


def test_every_registered_sampler_is_checked() -> None:
    assert {c.name for c in CONFIGS} == set(SAMPLERS)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_shape_dtype_and_determinism(config: SamplerConfig, posterior: AggregatePosterior) -> None:
    first = _draw(config, posterior, seed=1)
    assert first.z.shape == (DRAWS, LATENT_DIM)
    assert first.z.dtype == np.float32
    assert np.isfinite(first.z).all()
    np.testing.assert_array_equal(first.z, _draw(config, posterior, seed=1).z)
    assert not np.allclose(first.z, _draw(config, posterior, seed=2).z)
    if first.classes is not None:
        assert first.classes.shape == (DRAWS,)
        assert first.classes.dtype == np.int64
        assert set(np.unique(first.classes)) <= set(range(len(posterior.class_labels)))
    assert _draw(config, posterior, seed=1, n=0).z.shape == (0, LATENT_DIM)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_moments_match_target(config: SamplerConfig, temperature: float, posterior: AggregatePosterior) -> None:
    config = config.model_copy(update={"temperature": temperature})
    z = _draw(config, posterior, seed=3).z.astype(np.float64)
    mean, cov = target_moments(config, posterior, temperature)
    # Mean: 5 standard errors. Covariance entry (i, j): 8 standard errors of a Gaussian's sample covariance,
    # sqrt((Σii Σjj + Σij²) / n), which leaves room for the mixtures' heavier tails.
    mean_tol = 5 * np.sqrt(np.diag(cov) / DRAWS)
    cov_tol = 8 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / DRAWS)
    assert np.all(np.abs(z.mean(axis=0) - mean) < mean_tol)
    assert np.all(np.abs(np.cov(z.T, bias=True) - cov) < cov_tol)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_temperature_scales_offset_from_centre(config: SamplerConfig, posterior: AggregatePosterior) -> None:
    """Same generator state: z(T) = centre + T (z(1) - centre), with each row's centre one the sampler knows."""
    n = 2000
    one = _draw(config, posterior, seed=4, n=n)
    half = _draw(config.model_copy(update={"temperature": 0.5}), posterior, seed=4, n=n)
    centre = (half.z.astype(np.float64) - 0.5 * one.z) / 0.5  # solves half = c + 0.5 (one - c)
    candidates = {
        "prior": np.zeros((1, LATENT_DIM)),
        "gaussian": posterior.mean[None, :],
        "gmm": posterior.gmm_means,
        "empirical": posterior.reservoir_mu,
        "conditional": posterior.class_means,
    }[config.name]
    nearest = np.min(np.linalg.norm(centre[:, None, :] - candidates[None, :, :], axis=2), axis=1)
    assert nearest.max() < 1e-4
    spread_ratio = np.linalg.norm(half.z - centre, axis=1).sum() / np.linalg.norm(one.z - centre, axis=1).sum()
    assert spread_ratio == pytest.approx(0.5, abs=1e-4)


def test_conditional_class_shares_and_means(posterior: AggregatePosterior) -> None:
    sample = _draw(sampler_config(name="conditional"), posterior, seed=5)
    assert sample.classes is not None
    shares = np.bincount(sample.classes, minlength=3) / DRAWS
    expected = posterior.class_counts / posterior.class_counts.sum()
    np.testing.assert_allclose(shares, expected, atol=5 * np.sqrt(0.25 / DRAWS))
    for c in range(3):
        rows = sample.z[sample.classes == c].astype(np.float64)
        tol = 5 * np.sqrt(np.diag(posterior.class_covariances[c]) / rows.shape[0])
        assert np.all(np.abs(rows.mean(axis=0) - posterior.class_means[c]) < tol)


def test_empirical_returns_reservoir_classes(posterior: AggregatePosterior) -> None:
    sample = _draw(sampler_config(name="empirical"), posterior, seed=6)
    assert sample.classes is not None
    shares = np.bincount(sample.classes, minlength=3) / DRAWS
    expected = np.bincount(posterior.reservoir_labels, minlength=3) / posterior.reservoir_labels.shape[0]
    np.testing.assert_allclose(shares, expected, atol=5 * np.sqrt(0.25 / DRAWS))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_sample_before_fit_says_to_call_fit(config: SamplerConfig) -> None:
    with pytest.raises(NotFittedError, match=r"call fit"):
        build_sampler(config).sample(3, generator=np.random.default_rng(0))
