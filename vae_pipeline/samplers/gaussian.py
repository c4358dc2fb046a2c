"""One Gaussian matched to the aggregate posterior's mean and covariance: z = m + T · chol(Σ) ε."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, cholesky, standard_normal_tensor


class GaussianSampler(LatentSampler):
    """Moment-matched Gaussian.

    Args:
        temperature: multiplies the standard deviation.
        diagonal: drop the off-diagonal covariance (independent dimensions).
    """

    config_fields: ClassVar[tuple[str, ...]] = ("diagonal",)

    def __init__(self, temperature: float = 1.0, *, diagonal: bool = False) -> None:
        super().__init__(temperature)
        self.diagonal = diagonal

    def _fit(self, posterior: AggregatePosterior) -> None:
        self.mean_ = posterior.mean.astype(np.float32)
        covariance = posterior.covariance
        scale = np.diag(np.sqrt(np.diag(covariance))) if self.diagonal else cholesky(covariance)
        self.scale_ = scale.astype(np.float32)
        # z = mean + ε (T scale)ᵀ as one torch product: on the worker's torch thread, not numpy's BLAS threads.
        self.factor_ = torch.from_numpy(np.ascontiguousarray(self.temperature * self.scale_.T))  # (L, L)

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, None]:
        eps = standard_normal_tensor(generator, n, self.mean_.shape[0])  # (n, L)
        return torch.addmm(torch.from_numpy(self.mean_), eps, self.factor_).numpy(), None

    def _affine_form(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean_, self.temperature * self.scale_
