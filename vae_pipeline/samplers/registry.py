"""Sampler names -> classes; `build_sampler` turns the sampler config into an unfitted sampler."""

from __future__ import annotations

from vae_pipeline.config import SamplerConfig
from vae_pipeline.errors import ConfigError
from vae_pipeline.samplers.base import LatentSampler
from vae_pipeline.samplers.conditional import ConditionalSampler
from vae_pipeline.samplers.diffusion import DiffusionSampler
from vae_pipeline.samplers.empirical import EmpiricalSampler
from vae_pipeline.samplers.flow import FlowSampler
from vae_pipeline.samplers.gaussian import GaussianSampler
from vae_pipeline.samplers.gmm import GMMSampler
from vae_pipeline.samplers.learned import LearnedSampler
from vae_pipeline.samplers.prior import PriorSampler

SAMPLERS: dict[str, type[LatentSampler]] = {
    "prior": PriorSampler,
    "gaussian": GaussianSampler,
    "gmm": GMMSampler,
    "empirical": EmpiricalSampler,
    "conditional": ConditionalSampler,
}
# Learned priors: trained once by the statistics step and stored (samplers/store.py); `build_sampler` gives an
# untrained one with default settings, whose `fit` trains it.
LEARNED: dict[str, type[LearnedSampler]] = {"flow": FlowSampler, "diffusion": DiffusionSampler}


def build_sampler(config: SamplerConfig) -> LatentSampler:
    """An unfitted sampler for `config.name`, given the config fields that sampler declares."""
    sampler_class = SAMPLERS.get(config.name) or LEARNED.get(config.name)
    if sampler_class is None:
        raise ConfigError(f"unknown sampler '{config.name}'; choose one of {sorted(SAMPLERS | LEARNED)}")
    return sampler_class.from_config(config)
