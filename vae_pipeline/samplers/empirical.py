"""The reservoir mixture itself: pick a stored row's posterior q(z|x_i) uniformly, then z = μ_i + T · σ_i ε."""

from __future__ import annotations

import numpy as np

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, standard_normal


class EmpiricalSampler(LatentSampler):
    """Closest to q(z) itself; temperature scales each row's posterior spread (not the spread of the μ_i).

    Returns each row's class index (the chosen reservoir row's label) when the posterior has class labels.
    """

    def _fit(self, posterior: AggregatePosterior) -> None:
        self.mu_ = posterior.reservoir_mu.astype(np.float32)
        self.std_ = np.exp(0.5 * posterior.reservoir_logvar).astype(np.float32)
        labelled = len(posterior.class_labels) > 0
        self.labels_ = posterior.reservoir_labels.astype(np.int64) if labelled else None

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        rows = generator.integers(self.mu_.shape[0], size=n)
        z = standard_normal(generator, n, self.mu_.shape[1])
        z *= self.std_[rows]
        if self.temperature != 1.0:
            z *= self.temperature
        z += self.mu_[rows]
        return z, None if self.labels_ is None else self.labels_[rows]
