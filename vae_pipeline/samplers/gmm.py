"""The Gaussian mixture fitted (BIC-selected) to reservoir draws: component by weight, then its Gaussian."""

from __future__ import annotations

import numpy as np
import torch

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, cholesky, component_factors, gaussian_mixture


class GMMSampler(LatentSampler):
    """z = m_k + T · chol(Σ_k) ε with k ~ Categorical(weights); temperature scales each component's spread."""

    def _fit(self, posterior: AggregatePosterior) -> None:
        weights = np.asarray(posterior.gmm_weights, dtype=np.float64)
        self.weights_ = weights / weights.sum()
        self.means_ = torch.from_numpy(posterior.gmm_means.astype(np.float32))  # (K, L)
        chols = np.stack([cholesky(c) for c in posterior.gmm_covariances])
        self.factors_ = component_factors(chols, self.temperature)  # (K, L, L)

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, None]:
        z, _ = gaussian_mixture(self.weights_, self.means_, self.factors_, n, generator)
        return z, None
