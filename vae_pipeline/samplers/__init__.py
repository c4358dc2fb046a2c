"""Latent samplers: one algorithm per file, fitted on the aggregate posterior, returning latents only."""

from vae_pipeline.samplers.base import LatentSample, LatentSampler
from vae_pipeline.samplers.registry import SAMPLERS, build_sampler

__all__ = ["SAMPLERS", "LatentSample", "LatentSampler", "build_sampler"]
