"""The VAE's prior: z ~ N(0, T² I), ignoring the posterior except for its dimension."""

from __future__ import annotations

import numpy as np

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler


class PriorSampler(LatentSampler):
    """Standard normal draws, scaled by the temperature."""

    def _fit(self, posterior: AggregatePosterior) -> None:
        self.dim_ = posterior.latent_dim

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, None]:
        return self.temperature * generator.standard_normal((n, self.dim_), dtype=np.float32), None
