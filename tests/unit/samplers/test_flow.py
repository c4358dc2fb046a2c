"""The normalizing-flow prior: seeded draws, stored weights, a bimodal target, class conditioning, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from tests.unit.samplers.synthetic import synthetic_posterior
from vae_pipeline.config import StatisticsConfig
from vae_pipeline.errors import ConfigError, DataError
from vae_pipeline.executor import one_thread
from vae_pipeline.posterior.aggregate import AggregatePosterior, finalize_posterior
from vae_pipeline.posterior.stats import PosteriorStats
from vae_pipeline.samplers.flow import FlowSampler
from vae_pipeline.samplers.learned import LatentData

SMALL: dict[str, Any] = {
    "transforms": 2,
    "hidden": 32,
    "batch_size": 64,
}  # a flow that trains in about a second on these rows
MODES = np.array([[-2.0, 0.5], [2.0, -0.5]])
MODE_WEIGHTS = np.array([0.6, 0.4])
MODE_STD = 0.3


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


def bimodal_posterior(rows: int = 1000, seed: int = 0) -> AggregatePosterior:
    """Every row in the reservoir, μ from a two-mode mixture in L=2 (weights 0.6/0.4), σ = 0.01."""
    rng = np.random.default_rng(seed)
    modes = rng.choice(2, size=rows, p=MODE_WEIGHTS)
    mu = MODES[modes] + MODE_STD * rng.standard_normal((rows, 2))
    logvar = np.full((rows, 2), 2 * np.log(0.01))
    keys = rng.integers(0, np.iinfo(np.uint64).max, size=rows, dtype=np.uint64, endpoint=True)
    stats = PosteriorStats.empty(2, 0, rows)
    stats.update(mu, logvar, keys)
    config = StatisticsConfig(reservoir_size=rows, gmm_max_components=2, hole_draws=200, seed=seed)
    return finalize_posterior(stats, class_labels=[], config=config, model_fingerprint="bimodal")


@pytest.fixture(scope="module")
def labelled() -> AggregatePosterior:
    return synthetic_posterior(rows=1500, reservoir=600)


@pytest.fixture(scope="module")
def bimodal() -> AggregatePosterior:
    return bimodal_posterior()


@pytest.fixture(scope="module")
def bimodal_flow(bimodal: AggregatePosterior) -> FlowSampler:
    return FlowSampler(seed=0, epochs=40, **SMALL).fit(bimodal)


@pytest.fixture(scope="module")
def conditional_flow(labelled: AggregatePosterior) -> FlowSampler:
    return FlowSampler(seed=1, conditional=True, epochs=30, **SMALL).fit(labelled)


def test_same_generator_draws_the_same_bytes(conditional_flow: FlowSampler) -> None:
    first = conditional_flow.sample(300, generator=np.random.default_rng(7))
    second = conditional_flow.sample(300, generator=np.random.default_rng(7))
    other = conditional_flow.sample(300, generator=np.random.default_rng(8))
    assert first.z.dtype == np.float32 and first.z.shape == (300, 3)
    assert first.z.tobytes() == second.z.tobytes()
    assert first.classes is not None and second.classes is not None
    assert first.classes.tobytes() == second.classes.tobytes()
    assert not np.array_equal(first.z, other.z)


def test_same_seed_trains_the_same_flow(labelled: AggregatePosterior) -> None:
    fits = [FlowSampler(seed=3, epochs=3, **SMALL).fit(labelled) for _ in range(2)]
    draws = [fit.sample(200, generator=np.random.default_rng(0)) for fit in fits]
    assert draws[0].z.tobytes() == draws[1].z.tobytes()
    assert draws[0].classes is None  # unconditional on a labelled posterior: the codes are ignored
    assert [entry["held_nll"] for entry in fits[0].curve_] == [entry["held_nll"] for entry in fits[1].curve_]
    reseeded = FlowSampler(seed=4, epochs=3, **SMALL).fit(labelled)
    assert not np.array_equal(reseeded.sample(200, generator=np.random.default_rng(0)).z, draws[0].z)


def test_curve_has_one_entry_per_epoch(conditional_flow: FlowSampler) -> None:
    curve = conditional_flow.curve_
    assert [entry["epoch"] for entry in curve] == list(range(1, len(curve) + 1))
    assert all(set(entry) == {"epoch", "train_loss", "held_nll", "seconds"} for entry in curve)
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]


def test_stored_weights_draw_what_the_trained_flow_draws(
    conditional_flow: FlowSampler, labelled: AggregatePosterior
) -> None:
    settings = conditional_flow.settings()
    assert settings == {
        "temperature": 1.0,
        "seed": 1,
        "conditional": True,
        "transforms": 2,
        "hidden": 32,
        "epochs": 30,
        "learning_rate": 1e-3,
        "batch_size": 64,
    }
    state = conditional_flow.state_dict()
    assert {"shift", "chol"} <= set(state)  # the whitening travels with the weights
    loaded = FlowSampler(**settings).load_state(labelled, state, conditional_flow.curve_)
    expected = conditional_flow.sample(257, generator=np.random.default_rng(5))
    actual = loaded.sample(257, generator=np.random.default_rng(5))
    assert actual.z.tobytes() == expected.z.tobytes()
    assert actual.classes is not None and expected.classes is not None
    assert np.array_equal(actual.classes, expected.classes)
    assert loaded.log_likelihood(labelled) == conditional_flow.log_likelihood(labelled)
    assert loaded.curve_ == conditional_flow.curve_


def test_the_untrained_flow_is_the_gaussian_of_the_training_draws(labelled: AggregatePosterior) -> None:
    sampler = FlowSampler(seed=3, **SMALL)
    data = LatentData.from_posterior(labelled, sampler.seed)
    module = sampler._build(labelled.latent_dim, 0)
    module.whiten_to(data.mu[data.train], data.sigma[data.train])
    mu, sigma = data.mu[data.train].astype(np.float64), data.sigma[data.train].astype(np.float64)
    covariance = np.cov(mu, rowvar=False, bias=True) + np.diag((sigma**2).mean(axis=0))
    z = data.draws(data.held, torch.Generator().manual_seed(0))
    expected = multivariate_normal(mu.mean(axis=0), covariance).logpdf(z.double().numpy())
    with torch.no_grad():
        np.testing.assert_allclose(module.log_prob(z, None).double().numpy(), expected, rtol=1e-4)
        eps = torch.randn((5, labelled.latent_dim), generator=torch.Generator().manual_seed(1))
        expected_z = torch.from_numpy(mu.mean(axis=0) + eps.double().numpy() @ np.linalg.cholesky(covariance).T)
        torch.testing.assert_close(module.inverse(eps, None).double(), expected_z, rtol=1e-4, atol=1e-4)


def test_bimodal_target_moments_and_modes(bimodal_flow: FlowSampler) -> None:
    z = bimodal_flow.sample(4000, generator=np.random.default_rng(0)).z.astype(np.float64)
    target_mean = MODE_WEIGHTS @ MODES
    target_var = MODE_STD**2 + MODE_WEIGHTS @ (MODES - target_mean) ** 2
    np.testing.assert_allclose(z.mean(axis=0), target_mean, atol=0.15)
    np.testing.assert_allclose(z.var(axis=0), target_var, rtol=0.15)
    assert abs(np.mean(z[:, 0] > 0) - MODE_WEIGHTS[1]) < 0.05
    # A Gaussian with these moments puts about a quarter of its draws between the modes; the target almost none.
    assert np.mean(np.abs(z[:, 0]) < 0.8) < 0.05


def test_bimodal_held_out_likelihood_beats_a_gaussian(bimodal_flow: FlowSampler, bimodal: AggregatePosterior) -> None:
    data = LatentData.from_posterior(bimodal, bimodal_flow.seed)
    held = data.draws(data.held, torch.Generator().manual_seed(bimodal_flow.seed + 1))  # the draws the seam scores
    gaussian = torch.distributions.MultivariateNormal(
        torch.from_numpy(bimodal.mean).float(), torch.from_numpy(bimodal.covariance).float()
    )
    flow_ll = bimodal_flow.log_likelihood(bimodal)
    assert flow_ll is not None
    assert flow_ll > float(gaussian.log_prob(held).mean()) + 0.5  # measured: about 1.1 nats better


def test_restricted_to_a_class_draws_near_its_mean(conditional_flow: FlowSampler, labelled: AggregatePosterior) -> None:
    for code in range(len(labelled.class_labels)):
        sample = conditional_flow.restricted_to(code).sample(1000, generator=np.random.default_rng(code))
        assert sample.classes is not None and (sample.classes == code).all()
        np.testing.assert_allclose(sample.z.mean(axis=0), labelled.class_means[code], atol=0.25)
    classes = conditional_flow.sample(3000, generator=np.random.default_rng(9)).classes
    assert classes is not None
    shares = np.bincount(classes, minlength=3)
    np.testing.assert_allclose(shares / 3000, labelled.class_counts / labelled.class_counts.sum(), atol=0.03)


def test_zero_rows(conditional_flow: FlowSampler) -> None:
    sample = conditional_flow.sample(0, generator=np.random.default_rng(0))
    assert sample.z.shape == (0, 3) and sample.classes is not None and sample.classes.shape == (0,)


def test_conditional_without_labels_is_refused(labelled: AggregatePosterior) -> None:
    unlabelled = replace(
        labelled,
        reservoir_labels=np.full_like(labelled.reservoir_labels, -1),
        class_labels=[],
        class_counts=np.zeros(0, dtype=np.int64),
    )
    with pytest.raises(ConfigError, match="label_column"):
        FlowSampler(conditional=True, epochs=1, **SMALL).fit(unlabelled)


def test_diverged_training_is_refused(bimodal: AggregatePosterior) -> None:
    # Spline flows are bounded, so even a learning rate of 1e6 does not make the loss NaN; a NaN row does.
    mu = bimodal.reservoir_mu.copy()
    mu[3, 1] = np.nan
    sampler = FlowSampler(epochs=5, **SMALL)
    with pytest.raises(DataError, match="diverged"):
        sampler.fit(replace(bimodal, reservoir_mu=mu))
    assert len(sampler.curve_) == 1  # training stops at the first non-finite epoch


@pytest.mark.parametrize(
    ("option", "value"),
    [("transforms", 0), ("hidden", 2.5), ("epochs", -1), ("batch_size", 1), ("learning_rate", float("nan"))],
)
def test_bad_options_name_themselves(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=option):
        FlowSampler(**options)
