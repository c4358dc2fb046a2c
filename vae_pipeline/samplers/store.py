"""Learned priors stored beside the statistics, and the one way every step gets a fitted sampler.

Layout under the statistics URL:
    priors/<name>/weights.safetensors   the trained network
    priors/<name>/prior.json            format, kind, settings, training curve and seconds, held-out latent
                                        log-likelihood, the model fingerprint and statistics digest it was trained
                                        for, and the digest of its weights (written last: the commit)

A prior trained for other statistics (another model, recomputed statistics) is refused with a one-line error, and
its digest is part of a generation run's id, so new weights make a new run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from vae_pipeline import storage
from vae_pipeline.config import PriorsConfig, SamplerConfig
from vae_pipeline.errors import ArtifactMismatchError, ConfigError
from vae_pipeline.posterior.aggregate import ARRAYS_NAME, JSON_NAME, AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler
from vae_pipeline.samplers.learned import LearnedSampler
from vae_pipeline.samplers.registry import LEARNED, build_sampler

logger = logging.getLogger(__name__)

# v2: the denoiser's per-class standardisation and Fourier noise embedding, and the whitened flow (`chol`, not a
# per-dimension `scale`); v1 weights do not fit these networks. The statistics step's key carries the format, so
# `vae-pipeline stats` retrains priors of an older format rather than reusing them.
PRIOR_FORMAT = "vae-pipeline/prior/v2"
PRIORS_DIR = "priors"
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "prior.json"


def statistics_digest(statistics_url: str) -> str:
    """A content hash of the stored statistics, so recomputed statistics make a new run and refuse old priors."""
    files = (JSON_NAME, ARRAYS_NAME)
    return "".join(storage.sha256_of(storage.join_url(statistics_url, name))[:16] for name in files)


def prior_url(statistics_url: str, name: str) -> str:
    return storage.join_url(statistics_url, PRIORS_DIR, name)


def train_priors(
    settings: PriorsConfig, posterior: AggregatePosterior, statistics_url: str, device: str = "cpu"
) -> dict[str, Any]:
    """Train every prior `settings` lists on the posterior's reservoir, here, and store each; name -> summary."""
    return {name: train_prior(settings, name, posterior, statistics_url, device) for name in settings.requested()}


def train_prior(
    settings: PriorsConfig, name: str, posterior: AggregatePosterior, statistics_url: str, device: str = "cpu"
) -> dict[str, Any]:
    """Train the prior `name` on `device` and store it beside the statistics; returns its summary."""
    options = getattr(settings, name)
    started = time.perf_counter()
    sampler = LEARNED[name](seed=settings.seed, **options.model_dump()).train_on(device).fit(posterior)
    seconds = time.perf_counter() - started
    held = sampler.log_likelihood(posterior)
    save_prior(statistics_url, sampler, posterior, seconds, held)
    logger.info("trained the %s prior on %s in %.1fs (held-out latent log-likelihood %s)", name, device, seconds, held)
    return {"seconds": round(seconds, 3), "held_out_log_likelihood": held, "device": device}


def save_prior(
    statistics_url: str, sampler: LearnedSampler, posterior: AggregatePosterior, seconds: float, held: float | None
) -> None:
    """Weights first, prior.json last: a prior without its JSON is not a prior."""
    url = prior_url(statistics_url, sampler.kind)
    weights = save_tensors(sampler.state_dict())
    storage.atomic_write(storage.join_url(url, WEIGHTS_FILE), weights)
    meta = {
        "format": PRIOR_FORMAT,
        "kind": sampler.kind,
        "settings": sampler.settings(),
        "curve": sampler.curve_,
        "seconds": round(seconds, 3),
        "held_out_log_likelihood": held,
        "model_fingerprint": posterior.model_fingerprint,
        "statistics_digest": statistics_digest(statistics_url),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    storage.write_json(storage.join_url(url, META_FILE), meta)


def load_prior(statistics_url: str, config: SamplerConfig, posterior: AggregatePosterior) -> LearnedSampler:
    """The stored prior `config.name` for these statistics, with the sampling options of `config` applied."""
    name = config.name
    meta = prior_meta(statistics_url, name)
    where = storage.redact_url(prior_url(statistics_url, name))
    if meta["model_fingerprint"] != posterior.model_fingerprint or meta["statistics_digest"] != statistics_digest(
        statistics_url
    ):
        raise ArtifactMismatchError(
            f"the {name} prior at {where} was trained for other statistics (model "
            f"{meta['model_fingerprint'][:12]}); rerun `vae-pipeline stats` to retrain it"
        )
    weights = storage.read_bytes(storage.join_url(prior_url(statistics_url, name), WEIGHTS_FILE))
    if hashlib.sha256(weights).hexdigest() != meta["weights_sha256"]:
        raise ArtifactMismatchError(f"the {name} prior at {where} is damaged: its weights do not match prior.json")
    settings = {**meta["settings"], **_sampling_options(config)}
    return LEARNED[name](**settings).load_state(posterior, load_tensors(weights), meta["curve"])


def prior_meta(statistics_url: str, name: str) -> dict[str, Any]:
    """A stored prior's prior.json; a missing one is a one-line error naming the setting that trains it."""
    url = storage.join_url(prior_url(statistics_url, name), META_FILE)
    if not storage.exists(url):
        raise ConfigError(
            f"sampler {name!r} needs its trained prior, but {storage.redact_url(url)} does not exist; set "
            f"statistics.priors.{name} (it is trained by `vae-pipeline stats`) or pick another sampler"
        )
    meta = storage.read_json(url)
    if meta.get("format") != PRIOR_FORMAT:
        raise ArtifactMismatchError(
            f"{storage.redact_url(url)} is not a {PRIOR_FORMAT} prior; rerun `vae-pipeline stats`"
        )
    return dict(meta)


def prior_digest(statistics_url: str, name: str) -> str | None:
    """The stored prior's weights digest (part of a generation run's id), or None for a closed-form sampler."""
    return prior_meta(statistics_url, name)["weights_sha256"] if name in LEARNED else None


def fitted_sampler(config: SamplerConfig, posterior: AggregatePosterior, statistics_url: str) -> LatentSampler:
    """A sampler ready to draw: closed-form ones fit from the statistics, learned ones load their stored prior."""
    if config.name in LEARNED:
        return load_prior(statistics_url, config, posterior)
    return build_sampler(config).fit(posterior)


def stored_priors(statistics_url: str) -> list[str]:
    """The learned priors stored beside these statistics."""
    return [name for name in LEARNED if storage.exists(storage.join_url(prior_url(statistics_url, name), META_FILE))]


def _sampling_options(config: SamplerConfig) -> dict[str, Any]:
    """What a sampler config changes at sampling time: the temperature, and a diffusion's steps and solver."""
    options: dict[str, Any] = {"temperature": config.temperature}
    for name in ("steps", "solver"):
        value = getattr(config, name, None)
        if value is not None:
            options[name] = value
    return options
