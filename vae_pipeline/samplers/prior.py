"""The VAE's prior: z ~ N(0, T² I), ignoring the posterior except for its dimension."""

from __future__ import annotations

import numpy as np

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, standard_normal


class PriorSampler(LatentSampler):
    """Standard normal draws, scaled by the temperature."""

    def _fit(self, posterior: AggregatePosterior) -> None:
        self.dim_ = posterior.latent_dim

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, None]:
        z = standard_normal(generator, n, self.dim_)
        if self.temperature != 1.0:
            z *= self.temperature
        return z, None

    def _affine_form(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self.dim_, dtype=np.float32), np.float32(self.temperature) * np.eye(self.dim_, dtype=np.float32)
