"""Sharded generation on Ray: actors load the bundle and statistics once, then write shard after shard.

The driver plans the shards, refuses an output that holds another run (unless overwrite), fans the shards out
over an actor pool, and writes `_manifest.json` last. If a shard fails, the shards of this run are removed so no
partial dataset is left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ray
from ray.util.actor_pool import ActorPool

from vae_pipeline import storage
from vae_pipeline.bundle import ModelBundle, default_statistics_url, load_bundle
from vae_pipeline.config import PipelineConfig, SamplerConfig
from vae_pipeline.errors import ArtifactMismatchError, ConfigError, OutputExistsError, PrivacyError
from vae_pipeline.evaluation.store import default_evaluation_url, find_entry, read_report
from vae_pipeline.generation.manifest import (
    Manifest,
    generation_run_id,
    manifest_url,
    read_manifest,
    schema_json,
    write_manifest,
)
from vae_pipeline.generation.plan import ShardSpec, plan_shards
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.generation.writer import ShardRecord, write_shard
from vae_pipeline.posterior.aggregate import ARRAYS_NAME, JSON_NAME, AggregatePosterior, load_posterior
from vae_pipeline.runtime import ensure_ray, user_error_in
from vae_pipeline.samplers.registry import build_sampler

logger = logging.getLogger(__name__)

ShardCallback = Callable[[ShardRecord], None]


def run_generation(
    config: PipelineConfig,
    model_url: str | None = None,
    statistics_url: str | None = None,
    on_shard: ShardCallback | None = None,
) -> str:
    """Generate `config.generation.rows` rows into `config.generation.output_url`; returns the manifest URL."""
    settings = config.generation
    model_url = model_url or config.model_url
    statistics_url = statistics_url or default_statistics_url(model_url)
    bundle, posterior = load_artifacts(model_url, statistics_url)
    chosen, evaluation = resolve_sampler(config, model_url, bundle.fingerprint)
    build_sampler(chosen).fit(posterior)  # fail fast on a sampler that cannot serve this model
    sampler = sampler_json(chosen)
    run_id = generation_run_id(
        bundle_fingerprint=bundle.fingerprint,
        statistics_digest=statistics_digest(statistics_url),
        sampler=sampler,
        seed=settings.seed,
        rows=settings.rows,
        rows_per_shard=settings.rows_per_shard,
        batch_rows=settings.batch_rows,
    )
    output_url = settings.output_url
    if _already_complete(output_url, run_id):
        logger.info("%s already holds this run (%s); nothing to do", output_url, run_id)
        return manifest_url(output_url)
    _claim_output(output_url, settings.overwrite)
    plan = plan_shards(settings.rows, settings.rows_per_shard, settings.seed)
    ensure_ray(config.ray)
    records = _write_shards(plan, config, chosen, model_url, statistics_url, on_shard)
    _remove_stale_shards(output_url, {spec.name for spec in plan})
    manifest = Manifest(
        run_id=run_id,
        rows=sum(r.rows for r in records),
        shards=records,
        schema=schema_json(bundle.transform.schema),
        bundle_fingerprint=bundle.fingerprint,
        model_url=model_url,
        statistics_url=statistics_url,
        sampler=sampler,
        seed=settings.seed,
        rows_per_shard=settings.rows_per_shard,
        config=config.to_json(),
        extra={"sampler_requested": config.sampler.name, "evaluation": evaluation},
    )
    url = write_manifest(output_url, manifest)
    logger.info("wrote %d rows in %d shards to %s", manifest.rows, len(records), output_url)
    return url


def resolve_sampler(
    config: PipelineConfig, model_url: str, fingerprint: str
) -> tuple[SamplerConfig, dict[str, Any] | None]:
    """The sampler to generate with, and what the model's evaluation said of it.

    `auto` takes the evaluation's choice. The privacy guard refuses a sampler the evaluation found too close to
    the training rows, and `empirical` (it replays the posteriors of stored training rows) when no evaluation of
    this model vouches for it.
    """
    report = read_report(model_url)
    if report is not None and report["model_fingerprint"] != fingerprint:
        logger.warning("ignoring the evaluation at %s: it was made for another model", model_url)
        report = None
    sampler = config.sampler
    if sampler.name == "auto":
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
        sampler = SamplerConfig.model_validate(report["choice"]["sampler"])
    entry = find_entry(report, sampler) if report is not None else None
    evaluation = None if entry is None else {"report_url": default_evaluation_url(model_url), "scores": entry}
    if config.generation.privacy_guard:
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
    return sampler, evaluation


def load_artifacts(model_url: str, statistics_url: str) -> tuple[ModelBundle, AggregatePosterior]:
    """The bundle and its statistics, refusing statistics computed for another model."""
    bundle = load_bundle(model_url)
    posterior = load_posterior(statistics_url)
    if posterior.model_fingerprint != bundle.fingerprint:
        raise ArtifactMismatchError(
            f"statistics at {storage.redact_url(statistics_url)} belong to model {posterior.model_fingerprint[:12]}, "
            f"not {bundle.fingerprint[:12]} at {storage.redact_url(model_url)}; rerun `vae-pipeline stats`"
        )
    return bundle, posterior


def statistics_digest(statistics_url: str) -> str:
    """A content hash of the stored statistics, so recomputed statistics make a new run."""
    files = (JSON_NAME, ARRAYS_NAME)
    return "".join(storage.sha256_of(storage.join_url(statistics_url, name))[:16] for name in files)


def sampler_json(config: SamplerConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def _already_complete(output_url: str, run_id: str) -> bool:
    manifest = read_manifest(output_url)
    if manifest is None or manifest.run_id != run_id:
        return False
    return all(storage.exists(storage.join_url(output_url, s.name)) for s in manifest.shards)


def check_output_free(output_url: str, overwrite: bool, config: dict[str, Any] | None = None) -> None:
    """Refuse an output that holds another run, unless overwrite; a run of the very same `config` may resume.

    Raises:
        OutputExistsError: a manifest or part files of another run are there and overwrite is off.
    """
    manifest = read_manifest(output_url)
    existing_parts = storage.list_urls(output_url, "part-*.parquet")
    if overwrite or not (manifest or existing_parts):
        return
    if manifest is not None and config is not None and manifest.config == config:
        return
    what = "a manifest" if manifest else f"{len(existing_parts)} part files"
    raise OutputExistsError(
        f"output {storage.redact_url(output_url)} already holds another run ({what}); "
        "pass --overwrite to replace it or choose another --output"
    )


def _claim_output(output_url: str, overwrite: bool) -> None:
    """Check the output is free; with overwrite, retract the old manifest first so no reader trusts a mix."""
    check_output_free(output_url, overwrite)
    if overwrite and storage.exists(manifest_url(output_url)):
        logger.warning("overwriting the run at %s", output_url)
        storage.remove(manifest_url(output_url))


def _write_shards(
    plan: list[ShardSpec],
    config: PipelineConfig,
    chosen: SamplerConfig,
    model_url: str,
    statistics_url: str,
    on_shard: ShardCallback | None,
) -> list[ShardRecord]:
    settings = config.generation
    workers = min(settings.num_workers, len(plan))
    sampler = sampler_json(chosen)
    remote_actor: Any = GenerationActor  # ray.remote's class has .remote, which type checkers cannot see
    actors = [remote_actor.remote(model_url, statistics_url, sampler, settings.batch_rows) for _ in range(workers)]
    pool = ActorPool(actors)
    records: list[ShardRecord] = []
    try:
        results = pool.map_unordered(lambda actor, spec: actor.write.remote(spec.to_json(), settings.output_url), plan)
        for payload in results:
            record = ShardRecord.from_json(payload)
            records.append(record)
            if on_shard is not None:
                on_shard(record)
    except Exception as exc:
        _remove_shards(settings.output_url, [spec.name for spec in plan])
        cause = user_error_in(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
    return sorted(records, key=lambda r: r.index)


@ray.remote(num_cpus=1)
class GenerationActor:
    """Holds one loaded model, its statistics and a fitted sampler for many shards."""

    def __init__(self, model_url: str, statistics_url: str, sampler: dict[str, Any], batch_rows: int) -> None:
        import torch

        torch.set_num_threads(1)
        bundle, posterior = load_artifacts(model_url, statistics_url)
        fitted = build_sampler(SamplerConfig.model_validate(sampler)).fit(posterior)
        self.generator = ShardGenerator(bundle, posterior, fitted, batch_rows)

    def write(self, spec: dict[str, Any], output_url: str) -> dict[str, Any]:
        shard = ShardSpec(**spec)
        table = self.generator.generate(shard)
        return write_shard(table, output_url, shard.index, shard.name).to_json()


def _remove_shards(output_url: str, names: list[str]) -> None:
    for name in names:
        storage.remove(storage.join_url(output_url, name))


def _remove_stale_shards(output_url: str, keep: set[str]) -> None:
    """After an overwrite, part files of the old run that the new plan does not name."""
    for url in storage.list_urls(output_url, "part-*.parquet"):
        if url.rsplit("/", 1)[-1] not in keep:
            storage.remove(url)
