"""The sampler seam: `fit(posterior)` then `sample(n, generator=...)`, latents only.

A sampler never decodes and never writes files (one algorithm per file, diffusers `PHILOSOPHY.md`). The public
`fit`/`sample` do the bookkeeping and validation; a subclass writes only `_fit`/`_sample`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch

from vae_pipeline.config import SamplerConfig
from vae_pipeline.errors import ConfigError, DataError, NotFittedError
from vae_pipeline.posterior.aggregate import AggregatePosterior


@dataclass
class LatentSample:
    """n latent vectors and, for samplers that choose one, each row's class index (into the posterior's labels)."""

    z: np.ndarray  # (n, L) float32
    classes: np.ndarray | None = None  # (n,) int64


class LatentSampler(ABC):
    """Draws latents z from a distribution fitted to the aggregate posterior.

    Args:
        temperature: multiplies the standard deviation around the sampler's centre (1.0: as fitted).
    """

    #: SamplerConfig fields passed to the constructor besides `temperature`.
    config_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, temperature: float = 1.0, **options: Any) -> None:
        if options:
            raise ConfigError(
                f"{type(self).__name__} takes no options {sorted(options)}; "
                f"it takes only temperature{''.join(', ' + f for f in self.config_fields)}"
            )
        if not np.isfinite(temperature) or temperature <= 0:
            raise ConfigError(f"sampler temperature must be a positive number; got {temperature!r}")
        self.temperature = float(temperature)
        self.latent_dim_: int | None = None

    @classmethod
    def from_config(cls, config: SamplerConfig) -> Self:
        """Build from the sampler config, passing only the fields this sampler declares in `config_fields`."""
        options = {name: getattr(config, name) for name in cls.config_fields}
        return cls(temperature=config.temperature, **options)

    def fit(self, posterior: AggregatePosterior) -> Self:
        """Store what `sample` needs from the posterior; returns self."""
        if posterior.count < 1:
            raise DataError("the aggregate posterior holds no rows; rerun `vae-pipeline stats` on non-empty data")
        self._fit(posterior)
        self.latent_dim_ = posterior.latent_dim
        return self

    def sample(self, n: int, *, generator: np.random.Generator) -> LatentSample:
        """Draw n latents (n, L) float32, using only `generator` for randomness."""
        if self.latent_dim_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(posterior) before sample")
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer; got {n!r}")
        z, classes = self._sample(int(n), generator)
        return LatentSample(z=np.asarray(z, dtype=np.float32), classes=classes)

    def affine_form(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(shift (L,), scale (L, L)) float32 when `sample` is z = shift + standard_normal(generator, n, L) @ scale.T
        with no classes, drawing nothing else from the generator; None for other samplers.

        Generation folds such a map into the decoder's first layer and decodes the normal draws themselves, which
        saves an (n, L) x (L, L) product per batch (a third of a decoder pass at TVAE's sizes) and draws the same.
        """
        if self.latent_dim_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(posterior) before affine_form")
        return self._affine_form()

    def _affine_form(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    @abstractmethod
    def _fit(self, posterior: AggregatePosterior) -> None: ...

    @abstractmethod
    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]: ...


def cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; the posterior stores positive-definite covariances, so failure means corrupt data."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise DataError("a stored posterior covariance is not positive definite; rerun `vae-pipeline stats`") from exc


def standard_normal(generator: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """(rows, dim) float32 N(0, 1) draws, seeded by one draw from `generator` (which advances it).

    torch's vectorised Box-Muller is about 2.5x faster than numpy's ziggurat here, which matters: with a
    128-dimensional latent, numpy's draws alone cost two thirds of a decoder pass.
    """
    return standard_normal_tensor(generator, rows, dim).numpy()


def standard_normal_tensor(
    generator: np.random.Generator, rows: int, dim: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """`standard_normal` drawn on `device`: on a CPU the same draws; a GPU draws its own stream from the same seed."""
    seed = int(generator.integers(2**63, dtype=np.uint64))
    device = torch.device(device)
    return torch.randn((rows, dim), generator=torch.Generator(device).manual_seed(seed), device=device)


def component_factors(chols: np.ndarray, scale: float) -> torch.Tensor:
    """(K, L, L) float32 `scale · cholᵀ` per component, the right-hand factor `gaussian_mixture` multiplies by."""
    return torch.from_numpy(np.ascontiguousarray(scale * chols.transpose(0, 2, 1), dtype=np.float32))


def gaussian_mixture(
    weights: np.ndarray, means: torch.Tensor, factors: torch.Tensor, n: int, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n draws z_i = means[g_i] + ε_i factors[g_i] with g_i ~ Categorical(weights): ((n, L) float32, (n,) int64 g).

    The component counts are drawn as Multinomial(n, weights), each component turns its own contiguous block of
    normals with one product, and a uniform permutation puts the rows in order: given multinomial counts every
    order is equally likely, which is the law of n independent categorical choices, without a mask, a gather and
    a scatter per component. The products run in torch, on the worker's one torch thread: numpy's BLAS starts a
    thread per core for them, and on a machine full of workers those threads made a mixture draw cost more
    than a decoder pass.

    Args:
        weights: (K,) float64 component probabilities summing to one.
        means: (K, L) float32 component centres.
        factors: (K, L, L) float32 from `component_factors`.
    """
    counts = generator.multinomial(n, weights)  # (K,)
    eps = standard_normal_tensor(generator, n, means.shape[1])  # (n, L)
    z = torch.empty_like(eps)
    start = 0
    for component in np.flatnonzero(counts).tolist():
        end = start + int(counts[component])
        torch.addmm(means[component], eps[start:end], factors[component], out=z[start:end])
        start = end
    groups = np.repeat(np.arange(len(counts), dtype=np.int64), counts)  # (n,) in block order
    if np.count_nonzero(counts) > 1:  # a single component's rows are already in a uniformly random order
        order = generator.permutation(n)
        return z.index_select(0, torch.from_numpy(order)).numpy(), groups[order]
    return z.numpy(), groups
