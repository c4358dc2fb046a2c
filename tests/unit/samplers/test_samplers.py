"""Sampler specifics the contract test does not cover: options, registry dispatch, class choice, speed."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.unit.samplers.synthetic import CLASS_LABELS, synthetic_posterior
from vae_pipeline.config import PriorSamplerConfig, SamplerConfig, parse_config, sampler_config
from vae_pipeline.errors import ConfigError, NotFittedError
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers import SAMPLERS, build_sampler
from vae_pipeline.samplers.base import component_factors, gaussian_mixture, standard_normal
from vae_pipeline.samplers.conditional import ConditionalSampler
from vae_pipeline.samplers.empirical import EmpiricalSampler
from vae_pipeline.samplers.gaussian import GaussianSampler
from vae_pipeline.samplers.prior import PriorSampler


@pytest.fixture(scope="module")
def posterior() -> AggregatePosterior:
    return synthetic_posterior(rows=3000, reservoir=1000)


@pytest.fixture(scope="module")
def unlabelled(posterior: AggregatePosterior) -> AggregatePosterior:
    empty_classes = {"class_labels": [], "class_counts": np.zeros(0, dtype=np.int64)}
    return replace(posterior, reservoir_labels=np.full_like(posterior.reservoir_labels, -1), **empty_classes)


def test_build_sampler_passes_only_declared_options() -> None:
    gaussian = build_sampler(sampler_config(name="gaussian", diagonal=True, temperature=0.7))
    assert isinstance(gaussian, GaussianSampler) and gaussian.diagonal and gaussian.temperature == 0.7
    conditional = build_sampler(sampler_config(name="conditional", classes={"gentoo": 1.0}))
    assert isinstance(conditional, ConditionalSampler) and conditional.classes == {"gentoo": 1.0}
    for name, sampler_class in SAMPLERS.items():
        assert type(build_sampler(sampler_config(name=name))) is sampler_class


def test_each_sampler_takes_only_its_own_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'sampler\.diagonal'"):
        parse_config({"sampler": {"name": "prior", "diagonal": True}})
    with pytest.raises(ConfigError, match=r"'magic' is not a sampler; choose one of"):
        parse_config({"sampler": {"name": "magic"}})


def test_unknown_sampler_name_lists_the_known_ones() -> None:
    config = PriorSamplerConfig.model_construct(name="vamp", temperature=1.0)
    with pytest.raises(ConfigError, match=r"unknown sampler 'vamp'.*conditional.*prior"):
        build_sampler(config)


def test_constructor_rejects_bad_temperature_and_unknown_options() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        PriorSampler(temperature=0.0)
    with pytest.raises(ConfigError, match="no options"):
        PriorSampler(diagonal=True)


def test_conditional_follows_requested_shares(posterior: AggregatePosterior) -> None:
    sampler = ConditionalSampler(classes={"gentoo": 3.0, "adelie": 1.0}).fit(posterior)
    sample = sampler.sample(8000, generator=np.random.default_rng(0))
    assert sample.classes is not None
    shares = np.bincount(sample.classes, minlength=3) / 8000
    np.testing.assert_allclose(shares, [0.25, 0.0, 0.75], atol=0.02)


def test_conditional_unknown_class_lists_valid_ones(posterior: AggregatePosterior) -> None:
    with pytest.raises(ConfigError, match=r"\['emperor'\].*adelie.*chinstrap.*gentoo"):
        ConditionalSampler(classes={"emperor": 1.0}).fit(posterior)


@pytest.mark.parametrize("shares", [{"adelie": 0.0}, {"adelie": -1.0, "gentoo": 2.0}])
def test_conditional_rejects_bad_shares(posterior: AggregatePosterior, shares: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        ConditionalSampler(classes=shares).fit(posterior)


def test_conditional_needs_labels(unlabelled: AggregatePosterior) -> None:
    with pytest.raises(ConfigError, match="label_column"):
        ConditionalSampler().fit(unlabelled)


def test_empirical_returns_no_classes_without_labels(unlabelled: AggregatePosterior) -> None:
    sample = EmpiricalSampler().fit(unlabelled).sample(10, generator=np.random.default_rng(0))
    assert sample.classes is None


def test_class_labels_match_the_synthetic_names(posterior: AggregatePosterior) -> None:
    assert posterior.class_labels == CLASS_LABELS


def test_negative_n_is_rejected(posterior: AggregatePosterior) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        PriorSampler().fit(posterior).sample(-1, generator=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["prior", "gaussian", "gmm", "empirical"])
def test_a_million_rows_of_sixteen_dims_is_fast(name: str) -> None:
    rng = np.random.default_rng(0)
    dim, rows = 16, 10_000
    mu = rng.normal(size=(rows, dim))
    posterior = AggregatePosterior(
        latent_dim=dim,
        count=rows,
        mean=mu.mean(axis=0),
        covariance=np.cov(mu.T, bias=True) + 0.1 * np.eye(dim),
        kl_per_dim=np.zeros(dim),
        active_units=dim,
        active_mask=np.ones(dim, dtype=bool),
        class_labels=[],
        class_counts=np.zeros(0, dtype=np.int64),
        class_means=np.zeros((0, dim)),
        class_covariances=np.zeros((0, dim, dim)),
        reservoir_mu=mu,
        reservoir_logvar=np.full((rows, dim), np.log(0.1)),
        reservoir_labels=np.full(rows, -1, dtype=np.int64),
        gmm_weights=np.ones(1),
        gmm_means=mu.mean(axis=0)[None],
        gmm_covariances=np.eye(dim)[None],
        gmm_components=1,
        kl_to_prior_estimate=0.0,
        hole_fraction=0.0,
        hole_threshold=0.0,
        model_fingerprint="speed",
        config={},
    )
    sampler = build_sampler(sampler_config(name=name)).fit(posterior)
    start = time.perf_counter()
    sample = sampler.sample(1_000_000, generator=np.random.default_rng(1))
    elapsed = time.perf_counter() - start
    assert sample.z.shape == (1_000_000, dim)
    assert elapsed < 2.0  # typically a few tenths of a second; generous so a busy CI machine does not flake


# ------------------------------------------------------------------ the affine form generation folds into the decoder


@pytest.mark.parametrize(
    "config",
    [
        sampler_config(name="prior", temperature=0.7),
        sampler_config(name="gaussian"),
        sampler_config(name="gaussian", diagonal=True, temperature=1.3),
    ],
)
def test_affine_form_reproduces_sample(config: SamplerConfig, posterior: AggregatePosterior) -> None:
    sampler = build_sampler(config).fit(posterior)
    form = sampler.affine_form()
    assert form is not None
    shift, scale = form
    assert shift.dtype == scale.dtype == np.float32
    drawn_rng, folded_rng = np.random.default_rng(5), np.random.default_rng(5)
    sample = sampler.sample(1_000, generator=drawn_rng)
    folded = shift + standard_normal(folded_rng, 1_000, posterior.latent_dim) @ scale.T
    assert sample.classes is None
    np.testing.assert_allclose(sample.z, folded, rtol=1e-5, atol=1e-5)
    assert drawn_rng.integers(2**62) == folded_rng.integers(2**62)  # both generators advanced alike


@pytest.mark.parametrize("name", ["gmm", "empirical", "conditional"])
def test_mixtures_have_no_affine_form(name: str, posterior: AggregatePosterior) -> None:
    assert build_sampler(sampler_config(name=name)).fit(posterior).affine_form() is None
    with pytest.raises(NotFittedError):
        build_sampler(sampler_config(name=name)).affine_form()


def test_standard_normal_is_seeded_by_the_generator() -> None:
    first = standard_normal(np.random.default_rng(0), 50_000, 4)
    assert first.shape == (50_000, 4) and first.dtype == np.float32 and first.flags.c_contiguous
    np.testing.assert_array_equal(first, standard_normal(np.random.default_rng(0), 50_000, 4))
    assert not np.array_equal(first, standard_normal(np.random.default_rng(1), 50_000, 4))
    np.testing.assert_allclose(first.mean(axis=0), 0, atol=0.02)  # 4.5 standard errors
    np.testing.assert_allclose(np.cov(first.T), np.eye(4), atol=0.03)
    rng = np.random.default_rng(0)
    assert not np.array_equal(standard_normal(rng, 3, 4), standard_normal(rng, 3, 4))


# ------------------------------------------------------------------ the mixture draw behind gmm and conditional

WEIGHTS = np.array([0.5, 0.3, 0.15, 0.05])
CHI2_3DOF_P001 = 16.27  # chi-square quantile, 3 degrees of freedom, p = 0.001


def four_components() -> tuple[torch.Tensor, torch.Tensor]:
    """Component k: centre 10 (k, -k), independent spread 0.5 (k + 1) (temperature 0.5 on chol = (k + 1) I)."""
    means = torch.tensor([[10.0 * k, -10.0 * k] for k in range(4)])
    chols = np.stack([(k + 1) * np.eye(2) for k in range(4)])
    return means, component_factors(chols, 0.5)


def test_mixture_components_follow_the_weights_and_their_own_gaussians() -> None:
    means, factors = four_components()
    z, groups = gaussian_mixture(WEIGHTS, means, factors, 20_000, np.random.default_rng(0))
    assert z.shape == (20_000, 2) and z.dtype == np.float32 and groups.dtype == np.int64
    expected = 20_000 * WEIGHTS
    assert (((np.bincount(groups, minlength=4) - expected) ** 2) / expected).sum() < CHI2_3DOF_P001
    for k in range(4):
        rows = z[groups == k]  # each row's latent comes from its own component
        np.testing.assert_allclose(rows.mean(axis=0), means[k].numpy(), atol=0.1 * (k + 1))
        np.testing.assert_allclose(rows.std(axis=0), [0.5 * (k + 1)] * 2, rtol=0.1)


def test_mixture_rows_are_in_random_order() -> None:
    """Blocks per component are permuted: neighbours share a component as often as independent draws would."""
    means, factors = four_components()
    _, groups = gaussian_mixture(WEIGHTS, means, factors, 20_000, np.random.default_rng(1))
    same_as_next = np.mean(groups[1:] == groups[:-1])
    assert abs(same_as_next - np.sum(WEIGHTS**2)) < 0.02  # 0.365 expected, sd about 0.004
    assert set(groups[:200].tolist()) == {0, 1, 2, 3}


def test_mixture_is_seeded_by_the_generator() -> None:
    means, factors = four_components()
    first = gaussian_mixture(WEIGHTS, means, factors, 500, np.random.default_rng(3))
    again = gaussian_mixture(WEIGHTS, means, factors, 500, np.random.default_rng(3))
    other = gaussian_mixture(WEIGHTS, means, factors, 500, np.random.default_rng(4))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("rows", [0, 1, 7])
def test_mixture_of_one_component_and_few_rows(rows: int) -> None:
    means, factors = four_components()
    z, groups = gaussian_mixture(np.array([0.0, 0.0, 1.0, 0.0]), means, factors, rows, np.random.default_rng(0))
    assert z.shape == (rows, 2) and groups.tolist() == [2] * rows
