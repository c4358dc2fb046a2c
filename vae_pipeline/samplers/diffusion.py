"""A latent diffusion prior (TabSyn, Zhang et al. ICLR 2024, built on EDM, Karras et al. NeurIPS 2022).

The reservoir's posterior draws are standardised (mean and standard deviation are buffers of the network, so its
`state_dict` carries them), then an MLP denoiser D(x; σ) learns to undo Gaussian noise of every level σ with EDM's
preconditioning and loss. Sampling integrates the probability-flow ODE from σ_max down to 0 with DPM-Solver++(2M)
(Lu et al. 2022), one denoiser call per step where EDM's Heun sampler makes two, starting from the shard generator's
normal draws, so a generator gives the same bytes.

Known bias: a CPU-sized budget learns the denoiser least at high noise (ln σ ~ N(-1.2, 1.2²) puts 6% of its draws
above σ = 2), and there F must carry the latents' correlations, so a correlated Gaussian comes out with 81-102% of
its (co)variance (86-97% with EDM's Heun sampler, whose own error added about 5%). Whitening the latents, or a
matrix c_skip (the Gaussian's own denoiser), removed that bias but let a classifier tell draws from the target apart
more easily on a 16-dimensional mixture and on one stored VAE posterior (AUC 0.60-0.72 against 0.56-0.64; a tie on
another), so EDM's scalar preconditioning stays.

There is no closed-form density: `_log_likelihood` returns None (the probability-flow ODE's likelihood needs a
Jacobian trace per step and row, which costs more than training).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from vae_pipeline.errors import ConfigError, DataError
from vae_pipeline.samplers.base import standard_normal_tensor
from vae_pipeline.samplers.learned import LatentData, LearnedSampler

logger = logging.getLogger(__name__)

# EDM's settings (Karras et al. 2022, Table 1). σ_data is 1 because the latents are standardised.
SIGMA_DATA = 1.0
P_MEAN, P_STD = -1.2, 1.2  # ln σ ~ N(P_mean, P_std²) when training

# The sampler's noise levels (`sigma_schedule`), which only sampling reads. EDM's σ_max of 80 and σ_min of 0.002 are
# for pixels. The latents are standardised, so N(0, 20²) already swamps them (the noised latents have variance 20² + λ
# along an eigenvector of their covariance, λ 0.17-2.5 on four stored posteriors), and their posterior standard
# deviations measured 0.08 and up (1% quantile) in standardised units, so noise under 0.01 changes nothing visible.
# With exact denoisers a lower σ_max spends the steps where the latents' structure is: on three stored posteriors, 15
# steps from σ_max 80 drew 11-15% too much variance, from 20 5-8%, from 10 3-5% (EDM's ρ = 7 ramp). Trained
# denoisers pull the other way: on two modes 20 within-mode deviations apart (`test_diffusion`'s, at the default width,
# 5 seeds), 100 steps drew each mode 0.40 wide from σ_max 10, 0.37 from 20 and 0.34 from 80 (truly 0.30), as if
# the network's flow above σ = 10, where it barely trained, separated the modes early. 20 keeps most of both.
SIGMA_MIN, SIGMA_MAX = 0.01, 20.0

# DPM-Solver++(2M) steps, one denoiser call each. Measured against EDM's Heun sampler at its old default of 30 steps
# (59 calls) from σ_max 80: with the exact denoiser of a Gaussian, 20 steps draw 1.6% too much variance (Heun 2.9%);
# with the exact denoisers of three stored posteriors (their reservoirs' Gaussian mixtures), -0.1 to 1.8% (Heun 1.3 to
# 3.1%), a covariance error of 0.046-0.053 (Heun 0.047-0.066) and a classifier AUC against exact draws of 0.50-0.51
# (the same); with denoisers trained on four benchmark tables, covariance errors within 0.01 and AUCs within 0.004 of
# Heun's. Fewer steps cost little on those tables (12 steps from σ_max 10 matched Heun there too) but widen sharp modes:
# on the two modes above (8 seeds), each mode came out 0.38 wide at 20 steps, 0.41 at 15 and 0.44 at 12 (from σ_max
# 10), where Heun's 30 steps drew 0.35.
DEFAULT_STEPS = 20
# EDM's own sampler (Algorithm 1), `solver: heun`, on EDM's schedule (eq. 5, Table 1) as TabSyn runs it (50 steps):
# two denoiser calls a step. On equal steps in ln σ it drew 30% too much variance at 15 calls.
SOLVERS = ("dpm-solver++", "heun")
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
HELD_REPEATS = 4  # noisy copies of each held-out row in the fixed held-out loss
NOISE_CHANNELS = 64  # Fourier features of the noise level
# Rows denoised at once: this bounds the activations' memory, and (2048, 256) float32 activations (2 MiB) stay in a
# core's cache between layers. 10,000 rows at 12 steps drew 19.9k rows/s in chunks of 2,048 (1,024: the same), 14.5k
# in chunks of 4,096 and 11.6k in one chunk (one thread, the width 256 denoiser).
SAMPLE_CHUNK = 2_048


class NoiseEmbedding(nn.Module):
    """Random Fourier features of c_noise: [cos 2πfc, sin 2πfc] with f ~ N(0, 16²) (EDM's NCSN++ embedding).

    TabSyn uses the Transformer's positional embedding instead; with c_noise = ln(σ)/4 spanning only about
    [-1.6, 1.1], its frequencies (1 down to 1e-4) see an almost linear ramp. On two modes 20 within-mode standard
    deviations apart the Fourier features drew each mode 0.27-0.35 wide (target 0.30) after 60 epochs where the
    positional ones drew 0.42-0.48; on a 16-dimensional mixture and stored VAE posteriors the two tied. The
    frequencies are a buffer drawn from torch's seeded generator, so `state_dict` carries them.
    """

    freqs: torch.Tensor  # (C/2,)

    def __init__(self, channels: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * scale * torch.randn(channels // 2))  # (C/2,)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, C)
        angles = c_noise[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class Denoiser(nn.Module):
    """D(x; σ, class) on standardised latents: EDM's preconditioned wrapper (eq. 7) around an MLP F.

    F follows TabSyn's `MLPDiffusion`, CPU-sized: project x to `hidden` and add the embedding of the noise level
    (its Fourier features plus the class's embedding when conditional, then two layers), then three SiLU layers
    of width `hidden` and a linear map back to L. TabSyn's middle layers are twice as wide; at 256 that made an
    epoch 2.2x and a sampling step 2.2x slower on a CPU.
    """

    shift: torch.Tensor  # (K, L)
    scale: torch.Tensor  # (L,)

    def __init__(self, latent_dim: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        # The standardisation: the training draws' mean (K, L), per class when conditional (K = n_classes, else 1),
        # and their standard deviation (L,), within classes when conditional.
        self.register_buffer("shift", torch.zeros(max(n_classes, 1), latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        self.noise_features = NoiseEmbedding(NOISE_CHANNELS)
        self.class_embedding = nn.Embedding(n_classes, NOISE_CHANNELS) if n_classes else None
        self.embedding = nn.Sequential(nn.Linear(NOISE_CHANNELS, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.project = nn.Linear(latent_dim, hidden)
        layers = [module for _ in range(3) for module in (nn.SiLU(), nn.Linear(hidden, hidden))]
        self.body = nn.Sequential(*layers, nn.SiLU())
        self.head = nn.Linear(hidden, latent_dim)
        # F starts at zero (EDM initialises its output layers near zero): an untrained denoiser is then the exact
        # denoiser of a Gaussian with the draws' mean and variances, and training adds the rest.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def standardise(self, z: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """(N, L) latents -> (z - shift[class]) / scale."""
        return (z - (self.shift[0] if classes is None else self.shift[classes])) / self.scale

    def unstandardise(self, x: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        return (self.shift[0] if classes is None else self.shift[classes]) + x * self.scale

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """x (B, L) noisy standardised latents, sigma (B, 1) their noise levels, or (1, 1) one level for all rows
        (the sampler's case, which embeds the level once) -> (B, L) the denoised estimate."""
        # EDM Table 1: c_skip = σd²/(σ²+σd²), c_out = σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ln(σ)/4.
        total = sigma**2 + SIGMA_DATA**2
        c_skip, c_out, c_in = SIGMA_DATA**2 / total, sigma * SIGMA_DATA / total.sqrt(), total.rsqrt()
        f = self.head(self.body(self.project(c_in * x) + self._embed(sigma.log().flatten() / 4, classes)))  # (B, L)
        return c_skip * x + c_out * f  # EDM eq. 7

    def _embed(self, c_noise: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """(B, hidden) or (1, hidden) embedding of c_noise (B,) or (1,), plus each row's class when conditional."""
        features = self.noise_features(c_noise)  # (B or 1, C)
        if self.class_embedding is None or classes is None:
            return self.embedding(features)
        if len(c_noise) == 1:  # one level for the batch: embed it with each class once, then pick each row's
            return self.embedding(features + self.class_embedding.weight)[classes]
        return self.embedding(features + self.class_embedding(classes))  # added as EDM adds its class labels


def edm_loss(
    denoiser: Denoiser, y: torch.Tensor, classes: torch.Tensor | None, sigma: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Mean of λ(σ)·‖D(y + σn; σ) - y‖² per element, λ(σ) = (σ² + σd²)/(σ·σd)² (EDM eq. 2 and Table 1)."""
    weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2  # (B, 1)
    denoised = denoiser(y + sigma * noise, sigma, classes)
    return (weight * (denoised - y) ** 2).mean()


def noise_levels(rows: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, 1) σ with ln σ ~ N(P_mean, P_std²), EDM's training distribution (Table 1)."""
    return (P_MEAN + P_STD * torch.randn((rows, 1), generator=generator)).exp()


def sigma_schedule(steps: int) -> torch.Tensor:
    """(steps + 1,) σ_i = σ_max·(σ_min/σ_max)^(i/(N-1)) for i < N, then σ_N = 0: equal steps in λ = -ln σ, DPM-Solver's
    spacing. EDM's ρ = 7 ramp (eq. 5) crowds the steps at low noise; with DPM-Solver++(2M) and the exact denoiser of a
    Gaussian it drew 3.4% too much variance at 20 steps against 1.6% for equal steps in λ (11% and 4.5% at 12)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = SIGMA_MAX * (SIGMA_MIN / SIGMA_MAX) ** ramp
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).float()


@torch.no_grad()
def dpm_solver_sample(denoiser: Denoiser, x: torch.Tensor, classes: torch.Tensor | None, steps: int) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) on the probability-flow ODE dx/dσ = (x - D(x; σ))/σ, in EDM's
    parameterisation (α = 1, λ = -ln σ): x ← (σ'/σ)·x + (1 - σ'/σ)·D̂ solves it exactly while D stays put, and D̂ is
    D(x; σ) extrapolated linearly in λ through the previous step's D (second order; the first step takes D as it
    is). The last step, to σ = 0, is x = D(x; σ_min). x: (B, L) starting points at σ_max.

    EDM's Heun sampler (Algorithm 1) is second order too but calls D twice a step: with exact denoisers, at equal
    calls it drew four to five times the excess variance (see `DEFAULT_STEPS`)."""
    sigmas = sigma_schedule(steps).tolist()
    previous, previous_step = None, math.nan  # the last step's D(x; σ) and its length in λ
    for current, following in itertools.pairwise(sigmas):
        denoised = denoiser(x, torch.full((1, 1), current), classes)
        if following == 0:
            return denoised
        step = math.log(current / following)
        estimate = denoised
        if previous is not None:
            weight = step / (2 * previous_step)  # 1/(2r), r the ratio of the last step's length to this one's
            estimate = (1 + weight) * denoised - weight * previous
        x = torch.lerp(estimate, x, following / current)  # (σ'/σ)·x + (1 - σ'/σ)·D̂
        previous, previous_step = denoised, step
    return x


def edm_schedule(steps: int) -> torch.Tensor:
    """(steps + 1,) σ_i = (σ_max^(1/ρ) + i/(N-1)·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ for i < N, then σ_N = 0 (EDM eq. 5)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    top, bottom = EDM_SIGMA_MAX ** (1 / EDM_RHO), EDM_SIGMA_MIN ** (1 / EDM_RHO)
    return torch.cat([(top + ramp * (bottom - top)) ** EDM_RHO, torch.zeros(1, dtype=torch.float64)]).float()


@torch.no_grad()
def heun_sample(denoiser: Denoiser, x: torch.Tensor, classes: torch.Tensor | None, steps: int) -> torch.Tensor:
    """EDM's deterministic sampler (Algorithm 1): Euler steps along dx/dσ = (x - D(x; σ))/σ, each corrected by
    the trapezoid rule except the last one, to σ = 0. x: (B, L) starting points at EDM's σ_max."""
    sigmas = edm_schedule(steps).tolist()
    for current, following in itertools.pairwise(sigmas):
        slope = (x - denoiser(x, torch.full((1, 1), current), classes)) / current
        moved = x + (following - current) * slope
        if following > 0:
            corrected = (moved - denoiser(moved, torch.full((1, 1), following), classes)) / following
            moved = x + (following - current) * 0.5 * (slope + corrected)
        x = moved
    return x


class DiffusionSampler(LearnedSampler):
    """A TabSyn/EDM latent diffusion prior; temperature scales the starting noise x_0 = σ_max · T · ε.

    Args:
        temperature, seed, conditional: as `LearnedSampler`.
        steps: solver steps when sampling; None: `DEFAULT_STEPS`.
        solver: "dpm-solver++" (DPM-Solver++(2M), a denoiser call a step) or "heun" (EDM's Heun sampler on
            EDM's schedule, two calls a step: TabSyn's choice); None: "dpm-solver++".
        hidden: the denoiser MLP's width.
        epochs: passes over the reservoir's training rows (fresh posterior draws each pass).
        learning_rate: Adam's step size.
        batch_size: rows per Adam step.
    """

    kind = "diffusion"
    config_fields = ("steps", "solver")  # sampler config fields (None: the trained setting) `build_sampler` passes
    module_: Denoiser | None

    def __init__(
        self,
        temperature: float = 1.0,
        *,
        seed: int = 0,
        conditional: bool = False,
        steps: int | None = None,
        solver: str | None = None,
        hidden: int = 256,
        epochs: int = 60,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
    ) -> None:
        super().__init__(temperature, seed=seed, conditional=conditional)
        self.steps = DEFAULT_STEPS if steps is None else self._positive_int("steps", steps)
        self.solver = SOLVERS[0] if solver is None else solver
        if self.solver not in SOLVERS:
            raise ConfigError(f"diffusion sampler option solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
        self.hidden = self._positive_int("hidden", hidden)
        self.epochs = self._positive_int("epochs", epochs)
        self.batch_size = self._positive_int("batch_size", batch_size)
        self.learning_rate = self._positive_number("learning_rate", learning_rate)

    def settings(self) -> dict[str, Any]:
        options = {"steps": self.steps, "solver": self.solver, "hidden": self.hidden, "epochs": self.epochs}
        return {**super().settings(), **options, "learning_rate": self.learning_rate, "batch_size": self.batch_size}

    def _build(self, latent_dim: int, n_classes: int) -> Denoiser:
        return Denoiser(latent_dim, self.hidden, n_classes)

    def _train(self, data: LatentData, latent_dim: int) -> list[dict[str, float]]:
        """Adam on EDM's loss, keeping the epoch with the best held-out loss; `seconds` is each epoch's own."""
        if self.conditional and data.classes is None:
            raise DataError(
                "the diffusion prior's class conditioning needs every reservoir row's class, but some rows have "
                "none; rerun `vae-pipeline stats` with data.label_column set, or turn its conditioning off"
            )
        denoiser = self._build(latent_dim, data.n_classes if self.conditional else 0)
        _standardise_to(denoiser, data)
        self.module_ = denoiser = denoiser.to(self.device)
        generator = torch.Generator().manual_seed(self.seed)
        held = _held_batch(denoiser, data, generator)
        optimizer = torch.optim.Adam(denoiser.parameters(), lr=self.learning_rate)
        # Cosine decay to zero stands in for EDM's weight EMA, which needs far more steps than a CPU budget gives:
        # on a six-component mixture in 16 dimensions, 20-30 epochs at a constant rate drew means 0.24-0.27
        # standard deviations off and a 0.999 EMA lagged far behind the weights; with cosine decay, 0.10-0.14.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.epochs)
        curve: list[dict[str, float]] = []
        best, best_state = math.inf, copy.deepcopy(denoiser.state_dict())
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            train_loss = self._epoch(denoiser, optimizer, data, generator)
            schedule.step()
            denoiser.eval()
            with torch.no_grad():
                held_loss = float(edm_loss(denoiser, *held))
            seconds = time.perf_counter() - start
            curve.append({"epoch": epoch, "train_loss": train_loss, "held_loss": held_loss, "seconds": seconds})
            logger.debug("diffusion epoch %d: train %.4f held %.4f (%.2fs)", epoch, train_loss, held_loss, seconds)
            if not math.isfinite(train_loss):
                break  # diverged: the seam refuses the fit, more epochs would only spend time
            if held_loss < best:
                best, best_state = held_loss, copy.deepcopy(denoiser.state_dict())
        denoiser.load_state_dict(best_state)
        denoiser.eval()
        return curve

    def _epoch(
        self, denoiser: Denoiser, optimizer: torch.optim.Optimizer, data: LatentData, generator: torch.Generator
    ) -> float:
        """One pass over fresh posterior draws of the training rows, shuffled; the mean batch loss."""
        denoiser.train()
        codes = data.codes(data.train, self.device) if denoiser.class_embedding is not None else None
        y = denoiser.standardise(data.draws(data.train, generator, self.device), codes)  # (N, L)
        order = torch.randperm(len(y), generator=generator).to(self.device)
        total = 0.0
        for batch in order.split(self.batch_size):
            # Drawn on the CPU generator whatever the device: a seed means the same noise on a GPU.
            sigma = noise_levels(len(batch), generator).to(self.device)
            noise = torch.randn((len(batch), y.shape[1]), generator=generator).to(self.device)
            loss = edm_loss(denoiser, y[batch], None if codes is None else codes[batch], sigma, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        return total / len(y)

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        if self.module_ is None:
            raise AssertionError("sample checks that the sampler is fitted")
        classes = self._classes(n, generator)
        heun = self.solver == "heun"
        solve = heun_sample if heun else dpm_solver_sample
        start_sigma = EDM_SIGMA_MAX if heun else SIGMA_MAX
        x = start_sigma * self.temperature * standard_normal_tensor(generator, n, self.module_.scale.shape[0])
        codes = None if classes is None else torch.from_numpy(classes)
        self.module_.eval()
        for start in range(0, n, SAMPLE_CHUNK):
            rows = slice(start, start + SAMPLE_CHUNK)
            x[rows] = solve(self.module_, x[rows], None if codes is None else codes[rows], self.steps)
        return self.module_.unstandardise(x, codes).numpy(), classes

    def _log_likelihood(self, z: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor | None:
        return None


def _standardise_to(denoiser: Denoiser, data: LatentData) -> None:
    """Set the buffers to the training draws' mean and standard deviation: Var z = Var μ + E σ² (total variance),
    so no draws are needed. When conditional, each class's mean and the pooled within-class deviation: the network
    then need not learn where each class sits."""
    mu, sigma = data.mu[data.train].astype(np.float64), data.sigma[data.train].astype(np.float64)
    groups = np.zeros(len(mu), dtype=np.int64)
    if denoiser.class_embedding is not None and data.classes is not None:
        groups = data.classes[data.train]
    means = np.tile(mu.mean(axis=0), (len(denoiser.shift), 1))  # a class without training rows: the overall mean
    for group in np.unique(groups):
        means[group] = mu[groups == group].mean(axis=0)
    std = np.sqrt(((mu - means[groups]) ** 2).mean(axis=0) + (sigma**2).mean(axis=0))
    denoiser.shift.copy_(torch.from_numpy(means))
    denoiser.scale.copy_(torch.from_numpy(np.maximum(std, 1e-6)))


def _held_batch(
    denoiser: Denoiser, data: LatentData, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The held-out loss's fixed inputs (y, classes, σ, noise): drawn once, so epochs are compared on equal terms."""
    rows = np.tile(data.held, HELD_REPEATS)
    device = denoiser.scale.device
    codes = data.codes(rows, device) if denoiser.class_embedding is not None else None
    y = denoiser.standardise(data.draws(rows, generator, device), codes)
    sigma, noise = noise_levels(len(rows), generator), torch.randn(y.shape, generator=generator)
    return y, codes, sigma.to(device), noise.to(device)
