"""Held-out latent log-likelihood: how well each sampler's density fits posterior draws of rows it never saw.

The rows are the learned priors' held-out reservoir rows (`learned.LatentData`, split by `statistics.priors.seed`)
and the draws z = mu + sigma * eps the same ones `LearnedSampler.log_likelihood` scores, so every number is
comparable: nats per row, higher is better. Closed forms for prior, gaussian, gmm and conditional (the latter three
were fitted on the whole reservoir, held-out rows included, which flatters them slightly); a learned prior's own
estimate (the flow's exact density; None for diffusion, whose density is intractable); None for empirical (its
mixture components are the held-out rows' own posteriors).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from vae_pipeline.config import SamplerConfig
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler
from vae_pipeline.samplers.learned import LatentData, LearnedSampler


def held_out_draws(posterior: AggregatePosterior, seed: int) -> np.ndarray:
    """(H, L) float64 posterior draws of the held-out reservoir rows, as the learned priors score them."""
    data = LatentData.from_posterior(posterior, seed)
    return data.draws(data.held, torch.Generator().manual_seed(seed + 1)).double().numpy()


def held_out_log_likelihood(
    config: SamplerConfig, sampler: LatentSampler, posterior: AggregatePosterior, seed: int
) -> float | None:
    """Mean log-density of the held-out draws under the sampler at its temperature, or None where undefined."""
    if isinstance(sampler, LearnedSampler):
        return sampler.log_likelihood(posterior) if config.temperature == 1.0 else None
    z = held_out_draws(posterior, seed)
    scale = config.temperature**2
    if config.name == "prior":
        return _mean(multivariate_normal(np.zeros(z.shape[1]), scale * np.eye(z.shape[1])).logpdf(z))
    if config.name == "gaussian":
        covariance = posterior.covariance
        if getattr(config, "diagonal", False):
            covariance = np.diag(np.diag(covariance))
        return _mean(multivariate_normal(posterior.mean, scale * covariance, allow_singular=True).logpdf(z))
    if config.name == "gmm":
        return _mixture(z, posterior.gmm_weights, posterior.gmm_means, scale * posterior.gmm_covariances)
    if config.name == "conditional":
        counts = np.asarray(posterior.class_counts, dtype=np.float64)
        return _mixture(z, counts / counts.sum(), posterior.class_means, scale * posterior.class_covariances)
    return None


def _mixture(z: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> float:
    parts = [
        np.log(w) + multivariate_normal(m, c, allow_singular=True).logpdf(z)
        for w, m, c in zip(weights, means, covariances, strict=True)
        if w > 0
    ]
    return _mean(logsumexp(np.stack(parts), axis=0))


def _mean(values: np.ndarray) -> float:
    return float(np.mean(np.atleast_1d(values)))
