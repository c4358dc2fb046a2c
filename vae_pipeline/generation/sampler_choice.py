"""Which sampler a generation run uses: the one asked for, or `auto`'s pick from the model's evaluation, and the
privacy guard that refuses samplers whose rows sit too close to the training rows."""

from __future__ import annotations

import logging
from typing import Any

from vae_pipeline.config import PipelineConfig, SamplerConfig, parse_sampler
from vae_pipeline.errors import ConfigError, PrivacyError
from vae_pipeline.evaluation.store import default_evaluation_url, find_entry, read_report

logger = logging.getLogger(__name__)


def resolve_sampler(
    config: PipelineConfig, model_url: str, fingerprint: str, *, per_class: bool = False
) -> tuple[SamplerConfig, dict[str, Any] | None]:
    """The sampler to generate with, and what the model's evaluation said of it.

    `auto` takes the evaluation's choice. The privacy guard refuses a sampler the evaluation found too close to
    the training rows, and `empirical` (it replays the posteriors of stored training rows) when no evaluation of
    this model vouches for it. An augmented run of a plain (not conditional) model draws each class from its own
    latents (`per_class`): `auto` then takes the best `conditional` candidate, and the guard also reads the
    evaluation's per-class verdicts, since a minority class is where a generator is most tempted to replay rows.
    """
    report = read_report(model_url)
    if report is not None and report["model_fingerprint"] != fingerprint:
        logger.warning("ignoring the evaluation at %s: it was made for another model", model_url)
        report = None
    sampler = config.sampler
    if sampler.name == "auto":
        sampler = _augment_choice(report, per_class) if config.augment.enabled else _auto_choice(report)
    entry = find_entry(report, sampler) if report is not None else None
    evaluation = None if entry is None else {"report_url": default_evaluation_url(model_url), "scores": entry}
    if config.generation.privacy_guard:
        _guard(sampler, entry)
        if config.augment.enabled and entry is not None and entry.get("per_class_privacy_ok") is False:
            raise PrivacyError(
                f"sampler '{entry['name']}' fails the privacy guard for a class: "
                f"{entry.get('per_class_privacy_reason')}; pass --no-privacy-guard to generate anyway"
            )
    return sampler, evaluation


def sampler_json(config: SamplerConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def _auto_choice(report: dict[str, Any] | None) -> SamplerConfig:
    if report is None:
        raise ConfigError(
            "sampler 'auto' needs this model's evaluation; run `vae-pipeline evaluate` first "
            "(the `run` flow does) or pick one with --sampler"
        )
    if report["choice"] is None:
        raise PrivacyError(
            "no sampler passed the privacy guard in this model's evaluation; see its report.md, "
            "then pick one with --sampler and --no-privacy-guard if you accept the risk"
        )
    return parse_sampler(report["choice"]["sampler"])


def _augment_choice(report: dict[str, Any] | None, per_class: bool) -> SamplerConfig:
    """The best-ranked candidate that passes the guard for the whole table and for every class; for a plain model
    (`per_class`: each class drawn from its own latents) only `conditional` candidates can draw one class."""
    _auto_choice(report)  # the same errors when there is no evaluation
    assert report is not None
    for entry in report["samplers"]:  # ranked best first
        passes = entry["privacy_ok"] and entry.get("per_class_privacy_ok") is not False
        if passes and (not per_class or entry["sampler"]["name"] == "conditional"):
            return parse_sampler(entry["sampler"])
    which = "`conditional` candidate" if per_class else "candidate"
    raise PrivacyError(
        f"no {which} passed the privacy guard for every class in this model's evaluation; see its report.md"
        + ("; a CVAE (model.conditional: true) can augment with any sampler" if per_class else "")
    )


def _guard(sampler: SamplerConfig, entry: dict[str, Any] | None) -> None:
    if entry is not None and not entry["privacy_ok"]:
        raise PrivacyError(
            f"sampler '{entry['name']}' fails the privacy guard: {entry['privacy_reason']}; "
            "pass --no-privacy-guard to generate anyway"
        )
    if entry is None and sampler.name == "empirical":
        raise PrivacyError(
            "sampler 'empirical' replays training rows' posteriors and no evaluation of this "
            "model vouches for its privacy; run `vae-pipeline evaluate` or pass --no-privacy-guard"
        )
