"""Which sampler? Every sampler scored on the user's own data, against rows the model never trained on.

For each candidate sampler the job generates a bounded sample, scores it against the holdout (fidelity,
detection, utility when a label is set) and against the training rows (privacy, beside how close fresh real rows
come to them: `evaluation/privacy.py`), adds the latent diagnostics of
the statistics job, ranks the candidates and picks the best one that passes the privacy guard. The report lands
beside the model bundle: report.json (stable keys), report.md (a verdict and a ranked table) and plots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, default_statistics_url, load_bundle
from vae_pipeline.config import DataConfig, EvaluationConfig, PipelineConfig, SamplerConfig, sampler_config
from vae_pipeline.data import TableSource, open_source
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import privacy
from vae_pipeline.evaluation.report import write_report
from vae_pipeline.evaluation.sampling import RealSample, sample_real_rows
from vae_pipeline.evaluation.scorers import build_scorer
from vae_pipeline.evaluation.store import REPORT_FILE, REPORT_FORMAT, default_evaluation_url
from vae_pipeline.executor import one_thread
from vae_pipeline.generation.job import load_artifacts
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.posterior.aggregate import JSON_NAME, AggregatePosterior
from vae_pipeline.progress import NO_PROGRESS, Progress, plural
from vae_pipeline.samplers.base import LatentSampler
from vae_pipeline.samplers.likelihood import held_out_log_likelihood
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.samplers.store import fitted_sampler, prior_digest, prior_meta, stored_priors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    name: str
    sampler: SamplerConfig


def candidates(
    posterior: AggregatePosterior, settings: EvaluationConfig, priors: list[str] | None = None
) -> list[Candidate]:
    """Every sampler, the gaussian with and without off-diagonal terms, the learned `priors` stored beside the
    statistics, and the extra temperatures (a flow's too: it scales the base noise, as Glow's temperature does)."""
    found = [
        Candidate("prior", sampler_config(name="prior")),
        Candidate("gaussian", sampler_config(name="gaussian")),
        Candidate("gaussian-diagonal", sampler_config(name="gaussian", diagonal=True)),
        Candidate("gmm", sampler_config(name="gmm")),
        Candidate("empirical", sampler_config(name="empirical")),
    ]
    if len(posterior.class_labels) > 1:
        found.append(Candidate("conditional", sampler_config(name="conditional")))
    for name in priors or []:
        found.append(Candidate(name, sampler_config(name)))
    tempered = ["prior", "gaussian", "gmm"] + [name for name in priors or [] if name == "flow"]
    for temperature in settings.temperatures:
        for base in tempered:
            found.append(Candidate(f"{base}@T={temperature:g}", sampler_config(name=base, temperature=temperature)))
    return found


def run_evaluation(
    config: PipelineConfig,
    model_url: str | None = None,
    statistics_url: str | None = None,
    input_url: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> str:
    """Score every sampler and write the report; returns the URL of report.json. `progress` counts the candidates."""
    progress.start("evaluate", None, "candidates")
    model_url = model_url or config.model_url
    statistics_url = statistics_url or default_statistics_url(model_url)
    bundle, posterior = load_artifacts(model_url, statistics_url)
    data = bundle.config.data if input_url is None else bundle.config.data.model_copy(update={"input_url": input_url})
    source = open_source(data)
    check_schema(bundle, source.schema, data.input_url)
    evaluation_url = default_evaluation_url(model_url)
    report_json = storage.join_url(evaluation_url, REPORT_FILE)
    key = evaluation_step_key(config, bundle, statistics_url, source, data)
    reused = _reused(evaluation_url, key)
    if reused is not None:
        progress.finish(reused)
        return report_json
    with steps.timed() as clock:
        results = _evaluate(config, bundle, posterior, source, data, evaluation_url, statistics_url, progress)
    record = steps.finished_record("evaluate", key, steps.file_digest(report_json) or "", clock.seconds)
    steps.write_record(evaluation_url, record)
    progress.finish(evaluation_summary(results))
    return report_json


def evaluation_step_key(
    config: PipelineConfig, bundle: ModelBundle, statistics_url: str, source: TableSource, data: DataConfig
) -> str:
    """Everything that decides the report: the model, its statistics, the input files and the settings."""
    return steps.step_key(
        "evaluate",
        model=bundle.fingerprint,
        statistics=steps.file_digest(storage.join_url(statistics_url, JSON_NAME)),
        priors={name: prior_digest(statistics_url, name) for name in stored_priors(statistics_url)},
        input=steps.input_stamp(source.filesystem, source.files),
        data=data.model_dump(mode="json", exclude={"storage_options"}),
        evaluation=config.evaluation.model_dump(mode="json"),
        report=REPORT_FORMAT,
    )


def reused_evaluation(config: PipelineConfig, model_url: str, statistics_url: str) -> str | None:
    """`reused: <summary>` when the report under `model_url` scored this model, statistics, input and settings."""
    bundle = load_bundle(model_url)
    source = open_source(bundle.config.data)
    key = evaluation_step_key(config, bundle, statistics_url, source, bundle.config.data)
    return _reused(default_evaluation_url(model_url), key)


def _reused(evaluation_url: str, key: str) -> str | None:
    found = steps.reused_json(evaluation_url, "evaluate", key, storage.join_url(evaluation_url, REPORT_FILE))
    return None if found is None else "reused: " + evaluation_summary(found)


def _evaluate(
    config: PipelineConfig,
    bundle: ModelBundle,
    posterior: AggregatePosterior,
    source: TableSource,
    data: DataConfig,
    report_url: str,
    statistics_url: str,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    settings = config.evaluation
    real = sample_real_rows(source, data, settings.rows, settings.seed)
    check_holdout(real, settings, data.holdout_share)
    label = bundle.transform.label_column
    if label is not None:
        check_label(real, label)
    tables: dict[str, pa.Table] = {}
    latents: dict[str, np.ndarray] = {}
    scored: list[dict[str, Any]] = []
    # The scored samples are small: one thread per classifier is fastest, and far faster on a busy machine.
    found = candidates(posterior, settings, stored_priors(statistics_url))
    seed = config.statistics.priors.seed  # the held-out rows the learned priors never trained on
    progress.start("evaluate", len(found), "candidates")
    with one_thread():  # torch's decoding and the domain classifier too
        scorer = build_scorer(bundle.transform, real, settings)
        for candidate in found:
            fitted = fitted_sampler(candidate.sampler, posterior, statistics_url)
            tables[candidate.name], latents[candidate.name] = _generate(bundle, posterior, fitted, settings)
            entry: dict[str, Any] = {"name": candidate.name, "sampler": candidate.sampler.model_dump(mode="json")}
            entry["latent_log_likelihood"] = held_out_log_likelihood(candidate.sampler, fitted, posterior, seed)
            entry |= scorer.score(tables[candidate.name])
            entry["composite"] = scorer.composite(entry)
            scored.append(entry)
            logger.info("scored %s: composite %.3f", candidate.name, entry["composite"])
            progress.advance(1, candidate.name)
        reference = scorer.reference()
    for entry in scored:
        entry["privacy_ok"], entry["privacy_reason"] = privacy.verdict(
            entry["privacy"],
            scorer.baseline,
            privacy_margin=settings.privacy_margin,
            max_copy_excess=settings.max_copy_excess,
        )
    ranked = sorted(scored, key=lambda e: (-e["composite"], e["name"]))
    latents["aggregate posterior"] = _posterior_draws(posterior, settings)
    results = {
        "format": REPORT_FORMAT,
        "model_fingerprint": bundle.fingerprint,
        "seed": settings.seed,
        "label_column": label,
        "rows": {
            "synthetic_per_sampler": settings.rows,
            "holdout": real.holdout.num_rows,
            "train": real.train.num_rows,
        },
        "latent": _latent_diagnostics(posterior, config, statistics_url),
        "reference": reference,
        "real_copy_share": scorer.baseline["exact_copy_share"],
        "samplers": ranked,
        "choice": _choice(ranked),
    }
    for name, payload in scorer.artifacts().items():  # before report.json, the commit
        storage.atomic_write(storage.join_url(report_url, name), payload)
    write_report(report_url, scorer.report_inputs(results, tables, latents))
    logger.info("evaluation written to %s; choice: %s", report_url, results["choice"])
    return results


def check_schema(bundle: ModelBundle, schema: pa.Schema, input_url: str) -> None:
    expected = bundle.transform.schema
    if schema.names != expected.names or [f.type for f in schema] != [f.type for f in expected]:
        wanted = ", ".join(f"{f.name}: {f.type}" for f in expected)
        raise DataError(
            f"{storage.redact_url(input_url)} does not have the model's columns and types ({wanted}); "
            "evaluate on data with the training table's schema"
        )


def check_holdout(real: RealSample, settings: EvaluationConfig, holdout_fraction: float) -> None:
    needed = settings.min_holdout_rows
    if real.holdout_total < needed:
        raise DataError(
            f"the holdout has {real.holdout_total} rows but scoring needs at least {needed}; raise "
            f"data.holdout_fraction (now {holdout_fraction}) and retrain, lower evaluation.min_holdout_rows "
            "(at least 10) for a table this small, or use a larger table"
        )


def check_label(real: RealSample, label: str) -> None:
    classes = real.train.column(label).drop_null().unique()
    if len(classes) < 2:
        raise DataError(
            f"label column '{label}' has a single class ({classes.to_pylist()}); utility cannot be "
            "scored: unset data.label_column or use data with at least two classes"
        )


def _choice(ranked: list[dict[str, Any]]) -> dict[str, Any] | None:
    for entry in ranked:
        if entry["privacy_ok"]:
            reason = f"highest composite score ({entry['composite']:.3f}) among samplers that pass the privacy guard"
            return {"name": entry["name"], "sampler": entry["sampler"], "reason": reason}
    return None


def evaluation_summary(results: dict[str, Any]) -> str:
    """The evaluate step's key figures: `9 candidates, chose gmm`."""
    choice = results.get("choice")
    chosen = f"chose {choice['name']}" if choice else "none passes the privacy guard"
    return f"{plural(len(results['samplers']), 'candidate')}, {chosen}"


def _generate(
    bundle: ModelBundle, posterior: AggregatePosterior, fitted: LatentSampler, settings: EvaluationConfig
) -> tuple[pa.Table, np.ndarray]:
    table = ShardGenerator(bundle, posterior, fitted).generate(
        ShardSpec(index=0, rows=settings.rows, seed=settings.seed)
    )
    latents = fitted.sample(min(settings.rows, 2_000), generator=np.random.default_rng(settings.seed)).z
    return table, latents


def _posterior_draws(posterior: AggregatePosterior, settings: EvaluationConfig) -> np.ndarray:
    """Draws from q(z) for the latent-space plot: the empirical sampler is exactly the mixture of stored posteriors."""
    empirical = build_sampler(sampler_config(name="empirical")).fit(posterior)
    return empirical.sample(min(settings.rows, 2_000), generator=np.random.default_rng(settings.seed)).z


def _latent_diagnostics(posterior: AggregatePosterior, config: PipelineConfig, statistics_url: str) -> dict[str, Any]:
    priors = {name: prior_meta(statistics_url, name) for name in stored_priors(statistics_url)}
    return {
        "priors": {name: {"seconds": meta["seconds"], "epochs": len(meta["curve"])} for name, meta in priors.items()},
        "latent_dim": posterior.latent_dim,
        "active_units": posterior.active_units,
        "kl_to_prior_estimate": posterior.kl_to_prior_estimate,
        "hole_fraction": posterior.hole_fraction,
        "hole_quantile": config.statistics.hole_quantile,
        "gmm_components": posterior.gmm_components,
        "kl_per_dim": [float(v) for v in posterior.kl_per_dim],
    }
