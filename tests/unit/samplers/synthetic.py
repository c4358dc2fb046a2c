"""A small, seeded aggregate posterior with three well-separated, correlated classes, shared by sampler tests."""

from __future__ import annotations

import numpy as np

from vae_pipeline.config import StatisticsConfig
from vae_pipeline.posterior.aggregate import AggregatePosterior, finalize_posterior
from vae_pipeline.posterior.stats import PosteriorStats

CLASS_LABELS = ["adelie", "chinstrap", "gentoo"]
LATENT_DIM = 3


def synthetic_posterior(rows: int = 6000, reservoir: int = 2000, seed: int = 0) -> AggregatePosterior:
    """Class c (shares 0.5, 0.3, 0.2) has μ ~ N(centre_c, A_c A_cᵀ) and per-row σ² between 0.05 and 0.2."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=rows, p=[0.5, 0.3, 0.2])
    centres = np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0], [0.0, -2.5, 0.5]])
    mixing = (
        np.array([[[0.6, 0.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.1, 0.5]]] * 3) * np.array([1.0, 0.7, 1.3])[:, None, None]
    )
    mu = centres[labels] + np.einsum("nij,nj->ni", mixing[labels], rng.standard_normal((rows, LATENT_DIM)))
    logvar = np.log(rng.uniform(0.05, 0.2, size=(rows, LATENT_DIM)))
    keys = rng.integers(0, np.iinfo(np.uint64).max, size=rows, dtype=np.uint64, endpoint=True)
    stats = PosteriorStats.empty(LATENT_DIM, 3, reservoir)
    stats.update(mu, logvar, keys, labels)
    config = StatisticsConfig(reservoir_size=reservoir, gmm_max_components=4, hole_draws=500, seed=seed)
    return finalize_posterior(stats, class_labels=CLASS_LABELS, config=config, model_fingerprint="synthetic")
