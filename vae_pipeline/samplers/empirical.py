"""The reservoir mixture itself: pick a stored row's posterior q(z|x_i) uniformly, then z = μ_i + T · σ_i ε."""

from __future__ import annotations

import numpy as np
import torch

from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, standard_normal_tensor


class EmpiricalSampler(LatentSampler):
    """Closest to q(z) itself; temperature scales each row's posterior spread (not the spread of the μ_i).

    Returns each row's class index (the chosen reservoir row's label) when the posterior has class labels.
    """

    def _fit(self, posterior: AggregatePosterior) -> None:
        # Each stored row's [μ_i, T · σ_i] side by side: one gather per draw fetches both.
        spread = self.temperature * np.exp(0.5 * posterior.reservoir_logvar)
        self.rows_ = torch.from_numpy(np.concatenate([posterior.reservoir_mu, spread], axis=1).astype(np.float32))
        labelled = len(posterior.class_labels) > 0
        self.labels_ = posterior.reservoir_labels.astype(np.int64) if labelled else None

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        dim = self.rows_.shape[1] // 2
        rows = generator.integers(self.rows_.shape[0], size=n)
        eps = standard_normal_tensor(generator, n, dim)  # (n, L)
        picked = self.rows_.index_select(0, torch.from_numpy(rows))  # (n, 2L)
        z = torch.addcmul(picked[:, :dim], picked[:, dim:], eps)
        return z.numpy(), None if self.labels_ is None else self.labels_[rows]
