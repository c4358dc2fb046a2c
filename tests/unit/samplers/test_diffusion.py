"""The latent diffusion prior: EDM's schedule and preconditioning, seeded draws, stored weights, known targets
(a correlated Gaussian, two modes), class restriction, the best epoch's weights, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.samplers.synthetic import synthetic_posterior
from vae_pipeline.config import StatisticsConfig
from vae_pipeline.errors import ConfigError, DataError
from vae_pipeline.executor import one_thread
from vae_pipeline.posterior.aggregate import AggregatePosterior, finalize_posterior
from vae_pipeline.posterior.stats import PosteriorStats
from vae_pipeline.samplers.diffusion import (
    DEFAULT_STEPS,
    EDM_SIGMA_MAX,
    SIGMA_MAX,
    SIGMA_MIN,
    Denoiser,
    DiffusionSampler,
    _held_batch,
    dpm_solver_sample,
    edm_loss,
    heun_sample,
    sigma_schedule,
)
from vae_pipeline.samplers.learned import LatentData

# A denoiser that trains in about a second on these rows; few rows make few Adam steps, hence the larger rate.
SMALL: dict[str, Any] = {"hidden": 64, "batch_size": 32, "learning_rate": 3e-3, "steps": 20}
GAUSSIAN_MEAN = np.array([1.0, -2.0])
GAUSSIAN_COV = np.array([[1.0, 0.8], [0.8, 1.5]])
MODES = np.array([[-3.0, 0.0], [3.0, 0.0]])
MODE_WEIGHTS = np.array([0.7, 0.3])
MODE_STD, POSTERIOR_STD = 0.3, 0.05


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


def latent_posterior(mu: np.ndarray, posterior_std: float, seed: int = 0) -> AggregatePosterior:
    """Every row of `mu` in the reservoir, each with posterior standard deviation `posterior_std`, no labels."""
    rows, dim = mu.shape
    rng = np.random.default_rng(seed)
    keys = np.asarray(rng.integers(0, np.iinfo(np.uint64).max, size=rows, dtype=np.uint64, endpoint=True))
    stats = PosteriorStats.empty(dim, 0, rows)
    stats.update(mu, np.full((rows, dim), 2 * np.log(posterior_std)), keys)
    config = StatisticsConfig(reservoir_size=rows, gmm_max_components=2, hole_draws=200, seed=seed)
    return finalize_posterior(stats, class_labels=[], config=config, model_fingerprint="latent")


@pytest.fixture(scope="module")
def gaussian() -> AggregatePosterior:
    rng = np.random.default_rng(0)
    return latent_posterior(rng.multivariate_normal(GAUSSIAN_MEAN, GAUSSIAN_COV, size=1500), POSTERIOR_STD)


@pytest.fixture(scope="module")
def bimodal() -> AggregatePosterior:
    rng = np.random.default_rng(1)
    modes = rng.choice(2, size=1500, p=MODE_WEIGHTS)
    return latent_posterior(MODES[modes] + MODE_STD * rng.standard_normal((1500, 2)), POSTERIOR_STD)


@pytest.fixture(scope="module")
def labelled() -> AggregatePosterior:
    return synthetic_posterior(rows=1500, reservoir=600)


@pytest.fixture(scope="module")
def conditional(labelled: AggregatePosterior) -> DiffusionSampler:
    return DiffusionSampler(seed=1, conditional=True, epochs=40, **SMALL).fit(labelled)


def test_sigma_schedule_takes_equal_steps_in_log_sigma() -> None:
    sigmas = sigma_schedule(4).double()
    expected = SIGMA_MAX * (SIGMA_MIN / SIGMA_MAX) ** (np.arange(4) / 3)
    np.testing.assert_allclose(sigmas[:4].numpy(), expected, rtol=1e-6)
    assert sigmas[0] == pytest.approx(SIGMA_MAX) and sigmas[3] == pytest.approx(SIGMA_MIN) and sigmas[4] == 0
    assert sigma_schedule(1).tolist() == [SIGMA_MAX, 0.0]  # one step: x = D(x; σ_max)


class ExactGaussianDenoiser(Denoiser):
    """The exact denoiser of N(0, diag(variances)): D(x; σ) = λ/(λ + σ²)·x."""

    def __init__(self, variances: torch.Tensor) -> None:
        super().__init__(latent_dim=len(variances), hidden=8, n_classes=0)
        self.variances = variances

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        return self.variances / (self.variances + sigma**2) * x


def test_dpm_solver_draws_a_gaussian_with_its_exact_denoiser() -> None:
    # With a linear denoiser the sampler is linear too, x ↦ g·x, so g²·σ_max²/λ is the drawn variance's share of λ.
    variances = torch.tensor([0.1, 1.0, 2.5])
    denoiser = ExactGaussianDenoiser(variances)
    start = torch.full((1, 3), SIGMA_MAX)
    error = {
        steps: dpm_solver_sample(denoiser, start, None, steps)[0] ** 2 / variances - 1
        for steps in (10, DEFAULT_STEPS, 40)
    }
    assert (error[DEFAULT_STEPS].abs() < 0.03).all()  # measured 1.2-1.7% too much at 20 steps
    assert (error[40].abs() < error[10].abs()).all()  # second order: the error shrinks with the steps
    one_step = dpm_solver_sample(denoiser, start, None, 1)
    torch.testing.assert_close(one_step, denoiser(start, torch.full((1, 1), SIGMA_MAX), None))


def test_heun_on_edms_schedule_draws_a_gaussian_with_its_exact_denoiser() -> None:
    variances = torch.tensor([0.1, 1.0, 2.5])
    start = torch.full((1, 3), EDM_SIGMA_MAX)
    error = heun_sample(ExactGaussianDenoiser(variances), start, None, 30)[0] ** 2 / variances - 1
    assert (error.abs() < 0.05).all()  # EDM's sampler at 30 steps: about 3% too much (the old default)


def test_the_solver_is_a_sampling_option_of_a_trained_prior(gaussian: AggregatePosterior) -> None:
    trained = DiffusionSampler(seed=0, epochs=5, **SMALL).fit(gaussian)
    heun = DiffusionSampler(**{**trained.settings(), "solver": "heun"}).load_state(gaussian, trained.state_dict(), [])
    assert trained.settings()["solver"] == "dpm-solver++" and heun.settings()["solver"] == "heun"
    draws = {s.solver: s.sample(3000, generator=np.random.default_rng(1)).z for s in (trained, heun)}
    assert not np.array_equal(draws["heun"], draws["dpm-solver++"])
    for z in draws.values():  # two solvers of one ODE: the same distribution
        np.testing.assert_allclose(z.mean(axis=0), draws["heun"].mean(axis=0), atol=0.1)
    with pytest.raises(ConfigError, match="option solver must be one of dpm-solver\\+\\+, heun"):
        DiffusionSampler(solver="euler")


def test_preconditioning_passes_through_at_low_noise_and_predicts_at_high() -> None:
    torch.manual_seed(0)
    denoiser = Denoiser(latent_dim=3, hidden=16, n_classes=0)
    x = torch.randn(5, 3)
    with torch.no_grad():
        # c_skip → 1 and c_out → 0 as σ → 0 (EDM eq. 7): D(x; σ) ≈ x.
        low = denoiser(x, torch.full((5, 1), 1e-5), None)
        # σ → ∞: c_skip → 0 and c_in·x stays of unit size, so D is F's output, whatever x's size.
        high = denoiser(1e4 * x, torch.full((5, 1), 1e4), None)
    torch.testing.assert_close(low, x, atol=1e-4, rtol=0)
    assert high.abs().max() < 10


def test_same_generator_draws_the_same_bytes(conditional: DiffusionSampler) -> None:
    first = conditional.sample(300, generator=np.random.default_rng(7))
    second = conditional.sample(300, generator=np.random.default_rng(7))
    other = conditional.sample(300, generator=np.random.default_rng(8))
    assert first.z.dtype == np.float32 and first.z.shape == (300, 3)
    assert first.z.tobytes() == second.z.tobytes()
    assert first.classes is not None and second.classes is not None
    assert first.classes.tobytes() == second.classes.tobytes()
    assert not np.array_equal(first.z, other.z)


def test_same_seed_trains_the_same_prior(labelled: AggregatePosterior) -> None:
    fits = [DiffusionSampler(seed=3, epochs=2, **SMALL).fit(labelled) for _ in range(2)]
    draws = [fit.sample(200, generator=np.random.default_rng(0)) for fit in fits]
    assert draws[0].z.tobytes() == draws[1].z.tobytes()
    assert draws[0].classes is None  # unconditional on a labelled posterior: the codes are ignored
    assert [entry["held_loss"] for entry in fits[0].curve_] == [entry["held_loss"] for entry in fits[1].curve_]
    reseeded = DiffusionSampler(seed=4, epochs=2, **SMALL).fit(labelled)
    assert not np.array_equal(reseeded.sample(200, generator=np.random.default_rng(0)).z, draws[0].z)


def test_curve_and_the_best_epochs_weights(conditional: DiffusionSampler, labelled: AggregatePosterior) -> None:
    curve = conditional.curve_
    assert [entry["epoch"] for entry in curve] == list(range(1, 41))
    assert all(set(entry) == {"epoch", "train_loss", "held_loss", "seconds"} for entry in curve)
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    # The kept weights score the best epoch's held-out loss on the same fixed held-out batch.
    denoiser = conditional.module_
    assert isinstance(denoiser, Denoiser)
    data = LatentData.from_posterior(labelled, conditional.seed)
    held = _held_batch(denoiser, data, torch.Generator().manual_seed(conditional.seed))
    with torch.no_grad():
        loss = float(edm_loss(denoiser, *held))
    assert loss == pytest.approx(min(entry["held_loss"] for entry in curve), rel=1e-5)


def test_stored_weights_draw_what_the_trained_prior_draws(
    conditional: DiffusionSampler, labelled: AggregatePosterior
) -> None:
    settings = conditional.settings()
    assert settings == {
        "temperature": 1.0,
        "seed": 1,
        "conditional": True,
        "steps": 20,
        "solver": "dpm-solver++",
        "hidden": 64,
        "epochs": 40,
        "learning_rate": 3e-3,
        "batch_size": 32,
    }
    state = conditional.state_dict()
    assert {"shift", "scale", "class_embedding.weight"} <= set(state)  # standardisation travels with the weights
    loaded = DiffusionSampler(**settings).load_state(labelled, state, conditional.curve_)
    expected = conditional.sample(257, generator=np.random.default_rng(5))
    actual = loaded.sample(257, generator=np.random.default_rng(5))
    assert actual.z.tobytes() == expected.z.tobytes()
    assert actual.classes is not None and expected.classes is not None
    assert np.array_equal(actual.classes, expected.classes)
    assert loaded.curve_ == conditional.curve_
    assert loaded.log_likelihood(labelled) is None  # no tractable density


def test_correlated_gaussian_moments(gaussian: AggregatePosterior) -> None:
    sampler = DiffusionSampler(seed=0, epochs=40, **{**SMALL, "batch_size": 64, "learning_rate": 1e-3}).fit(gaussian)
    z = sampler.sample(4000, generator=np.random.default_rng(0)).z.astype(np.float64)
    assert np.allclose(gaussian.mean, GAUSSIAN_MEAN, atol=0.1)  # the posterior is the correlated Gaussian's
    np.testing.assert_allclose(z.mean(axis=0), gaussian.mean, atol=0.1)  # measured 0.05 at most over 4 seeds
    # A small budget draws 81-102% of each (co)variance (4 seeds): F learns the correlation least at high noise,
    # where EDM's ln σ ~ N(-1.2, 1.2²) trains least. 20 DPM-Solver steps add about 1.5% back (EDM's Heun sampler at 20
    # steps from σ_max 80 added about 5%, and drew 86-97%).
    np.testing.assert_allclose(np.cov(z.T), gaussian.covariance, rtol=0.2)


def test_two_modes_both_get_their_share(bimodal: AggregatePosterior) -> None:
    sampler = DiffusionSampler(seed=0, epochs=60, **{**SMALL, "batch_size": 64}).fit(bimodal)
    z = sampler.sample(4000, generator=np.random.default_rng(0)).z.astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), bimodal.mean, atol=0.3)  # x: a share 0.05 off moves it by 0.3
    np.testing.assert_allclose(z.var(axis=0), np.diag(bimodal.covariance), rtol=0.1)
    right = z[:, 0] > 0
    assert abs(right.mean() - MODE_WEIGHTS[1]) < 0.05
    within = np.hypot(MODE_STD, POSTERIOR_STD)
    for side, mode in ((~right, MODES[0]), (right, MODES[1])):
        np.testing.assert_allclose(z[side].mean(axis=0), mode, atol=0.2)
        # Across the gap a small budget draws each mode wider than it is (measured up to 1.7x); along it, true.
        assert within * 0.8 < z[side, 0].std() < within * 2
        assert z[side, 1].std() == pytest.approx(within, rel=0.15)
    # A Gaussian with these moments puts a third of its draws between the modes; the target almost none.
    assert np.mean(np.abs(z[:, 0]) < 1.5) < 0.02


def test_temperature_narrows_the_draws(bimodal: AggregatePosterior) -> None:
    state_source = DiffusionSampler(seed=0, epochs=3, **SMALL).fit(bimodal)
    cold = DiffusionSampler(temperature=0.5, epochs=3, **SMALL).load_state(bimodal, state_source.state_dict(), [])
    warm = state_source.sample(2000, generator=np.random.default_rng(0)).z
    assert cold.sample(2000, generator=np.random.default_rng(0)).z.std(axis=0)[1] < warm.std(axis=0)[1]


def test_restricted_to_a_class_draws_near_it(conditional: DiffusionSampler, labelled: AggregatePosterior) -> None:
    for code in range(len(labelled.class_labels)):
        sample = conditional.restricted_to(code).sample(1000, generator=np.random.default_rng(code))
        assert sample.classes is not None and (sample.classes == code).all()
        np.testing.assert_allclose(sample.z.mean(axis=0), labelled.class_means[code], atol=0.25)
        nearest = np.linalg.norm(sample.z[:, None] - labelled.class_means[None], axis=2).argmin(axis=1)
        assert np.mean(nearest == code) > 0.9
    classes = conditional.sample(3000, generator=np.random.default_rng(9)).classes
    assert classes is not None
    shares = np.bincount(classes, minlength=3) / 3000
    np.testing.assert_allclose(shares, labelled.class_counts / labelled.class_counts.sum(), atol=0.03)


def test_zero_rows(conditional: DiffusionSampler) -> None:
    sample = conditional.sample(0, generator=np.random.default_rng(0))
    assert sample.z.shape == (0, 3) and sample.classes is not None and sample.classes.shape == (0,)


def test_diverged_training_is_refused(labelled: AggregatePosterior) -> None:
    sampler = DiffusionSampler(epochs=5, **{**SMALL, "learning_rate": 1e6})
    with pytest.raises(DataError, match="diverged"):
        sampler.fit(labelled)
    assert len(sampler.curve_) == 1  # training stops at the first non-finite epoch


@pytest.mark.parametrize(
    ("option", "value"),
    [("steps", 0), ("steps", -3), ("hidden", 2.5), ("epochs", 0), ("batch_size", 0), ("learning_rate", float("nan"))],
)
def test_bad_options_name_themselves(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=f"option {option} must be") as error:
        DiffusionSampler(**options)
    assert "\n" not in str(error.value)


def test_steps_default_and_override() -> None:
    assert DiffusionSampler().steps == DiffusionSampler(steps=None).steps > 0
    assert DiffusionSampler(steps=7).settings()["steps"] == 7
