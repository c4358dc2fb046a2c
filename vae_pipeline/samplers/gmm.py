"""The Gaussian mixture fitted (BIC-selected) to reservoir draws: component by weight, then its Gaussian."""

from __future__ import annotations

import numpy as np

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, cholesky, gaussian_groups


class GMMSampler(LatentSampler):
    """z = m_k + T · chol(Σ_k) ε with k ~ Categorical(weights); temperature scales each component's spread."""

    def _fit(self, posterior: AggregatePosterior) -> None:
        weights = np.asarray(posterior.gmm_weights, dtype=np.float64)
        self.weights_ = weights / weights.sum()
        self.means_ = posterior.gmm_means.copy()
        self.chols_ = np.stack([cholesky(c) for c in posterior.gmm_covariances])

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, None]:
        components = generator.choice(self.weights_.shape[0], size=n, p=self.weights_)
        return gaussian_groups(components, self.means_, self.chols_, self.temperature, generator), None
