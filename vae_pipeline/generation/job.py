"""Sharded generation on Ray, exactly once: actors load the bundle and statistics once, then write shard after shard.

The driver plans the shards, claims the output (refusing another run's unless overwrite), fans the shards out over
an actor pool and writes `_manifest.json` last (the protocol is in `output.py`). A worker process that dies is
restarted and its shard retried; the retried shard has the same seed and so the same bytes. A run that stops
anyway keeps its finished shards, and `resume` redoes only the missing or damaged ones.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ray
import torch
from ray.util.actor_pool import ActorPool

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, default_statistics_url, load_bundle
from vae_pipeline.config import PipelineConfig, SamplerConfig
from vae_pipeline.errors import ArtifactMismatchError, ConfigError
from vae_pipeline.evaluation.store import default_evaluation_url
from vae_pipeline.generation import output
from vae_pipeline.generation.lease import OutputLease
from vae_pipeline.generation.manifest import (
    Manifest,
    generation_run_id,
    manifest_url,
    read_manifest,
    schema_json,
    write_manifest,
)
from vae_pipeline.generation.plan import ShardSpec, plan_shards
from vae_pipeline.generation.sampler_choice import resolve_sampler, sampler_json
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.generation.writer import ShardRecord, write_shard
from vae_pipeline.posterior.aggregate import ARRAYS_NAME, JSON_NAME, AggregatePosterior, load_posterior
from vae_pipeline.progress import NO_PROGRESS, Progress, plural
from vae_pipeline.resources import require_gpus
from vae_pipeline.runtime import ensure_ray, user_error_in
from vae_pipeline.samplers.registry import build_sampler

logger = logging.getLogger(__name__)

ShardCallback = Callable[[ShardRecord], None]

__all__ = ["load_artifacts", "resolve_sampler", "run_generation"]


def run_generation(
    config: PipelineConfig,
    model_url: str | None = None,
    statistics_url: str | None = None,
    on_shard: ShardCallback | None = None,
    progress: Progress = NO_PROGRESS,
) -> str:
    """Generate `config.generation.rows` rows into `config.generation.output_url`; returns the manifest URL.

    `on_shard` sees each shard's record as it is committed; `progress` counts the committed shards. The output's
    lease is taken with its claim and given back however the run ends: a second driver on the same output is
    refused with a one-line error instead of writing beside this one (generation/lease.py).
    """
    lease = OutputLease(config.generation.output_url)
    try:
        return _generate(config, model_url, statistics_url, on_shard, progress, lease)
    finally:
        lease.release()


def _generate(
    config: PipelineConfig,
    model_url: str | None,
    statistics_url: str | None,
    on_shard: ShardCallback | None,
    progress: Progress,
    lease: OutputLease,
) -> str:
    started = time.perf_counter()
    settings = config.generation
    progress.start("generate", -(-settings.rows // settings.rows_per_shard), "shards")
    model_url = model_url or config.model_url
    statistics_url = statistics_url or default_statistics_url(model_url)
    bundle, posterior = load_artifacts(model_url, statistics_url)
    chosen, evaluation = resolve_sampler(config, model_url, bundle.fingerprint)
    build_sampler(chosen).fit(posterior)  # fail fast on a sampler that cannot serve this model
    run_id = generation_run_id(
        bundle_fingerprint=bundle.fingerprint,
        statistics_digest=statistics_digest(statistics_url),
        sampler=sampler_json(chosen),
        seed=settings.seed,
        rows=settings.rows,
        rows_per_shard=settings.rows_per_shard,
        batch_rows=settings.decode_batch_rows,
        device=settings.device,
    )
    output_url = settings.output_url
    committed = read_manifest(output_url)
    same_run = committed is not None and committed.run_id == run_id
    if committed is not None and same_run and not settings.resume and _looks_complete(output_url, committed):
        logger.info("%s already holds this run (%s); nothing to do", storage.redact_url(output_url), run_id)
        progress.finish(f"reused: {plural(committed.rows, 'row')} in {plural(len(committed.shards), 'shard')}")
        return manifest_url(output_url)
    plan = plan_shards(settings.rows, settings.rows_per_shard, settings.seed)
    claim = output.RunClaim(run_id=run_id, shards=len(plan), rows=settings.rows, config=config.to_json())
    if settings.use_gpu:  # checked before the claim, so a cluster without the GPUs leaves the output untouched
        ensure_ray(config.ray)
        require_gpus(min(settings.num_workers, len(plan)), config.ray.gpu_wait_s, what="generation worker")
    output.claim_output(output_url, claim, settings.overwrite, settings.resume, lease)
    ensure_ray(config.ray)
    writing = time.perf_counter()

    def committed_shard(record: ShardRecord) -> None:
        progress.advance(1, record.name)
        if on_shard is not None:
            on_shard(record)

    records, workers = _write_all(plan, config, chosen, model_url, statistics_url, run_id, committed_shard)
    summary = generation_summary(sum(r.rows for r in records), len(records), time.perf_counter() - writing)
    output.remove_strays(output_url, {spec.name for spec in plan})
    if same_run:
        logger.info("repaired the shards of committed run %s at %s", run_id, storage.redact_url(output_url))
        progress.finish(f"repaired: {summary}")
        return manifest_url(output_url)
    manifest = Manifest(
        run_id=run_id,
        rows=sum(r.rows for r in records),
        shards=records,
        schema=schema_json(bundle.transform.schema),
        bundle_fingerprint=bundle.fingerprint,
        model_url=model_url,
        statistics_url=statistics_url,
        sampler=sampler_json(chosen),
        seed=settings.seed,
        rows_per_shard=settings.rows_per_shard,
        config=config.to_json(),
        extra={
            "sampler_requested": config.sampler.name,
            "evaluation": evaluation,
            "workers": workers,
            "seconds": round(time.perf_counter() - started, 3),
            "history": step_history(model_url, statistics_url),
        },
    )
    lease.check()  # a driver whose lease expired and was taken over must not commit
    url = write_manifest(output_url, manifest)
    logger.info("wrote %d rows in %d shards to %s", manifest.rows, len(records), storage.redact_url(output_url))
    progress.finish(summary)
    return url


def generation_summary(rows: int, shards: int, seconds: float) -> str:
    """The generate step's key figures: `100,000 rows in 4 shards, 120,000 rows/s`."""
    return f"{plural(rows, 'row')} in {plural(shards, 'shard')}, {rows / max(seconds, 1e-9):,.0f} rows/s"


def step_history(model_url: str, statistics_url: str) -> list[dict[str, Any]]:
    """What the upstream steps recorded (when, how long, peak memory), so a dataset carries its lineage."""
    evaluation_url = default_evaluation_url(model_url)
    return steps.history({"train": model_url, "statistics": statistics_url, "evaluate": evaluation_url})


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


def _looks_complete(output_url: str, manifest: Manifest) -> bool:
    """Every shard the manifest lists is there with its size (checksums are what `resume` verifies)."""
    return all(output.shard_present(output_url, record, verify=False) for record in manifest.shards)


def _write_all(
    plan: list[ShardSpec],
    config: PipelineConfig,
    chosen: SamplerConfig,
    model_url: str,
    statistics_url: str,
    run_id: str,
    on_shard: ShardCallback | None,
) -> tuple[list[ShardRecord], list[dict[str, Any]]]:
    """Every shard of the plan, done or reused; on failure the finished shards stay for `resume`."""
    settings = config.generation
    workers = min(settings.num_workers, len(plan))
    retries = settings.max_shard_retries
    remote_actor: Any = GenerationActor  # ray.remote's class has .remote, which type checkers cannot see
    options = {"max_restarts": retries, "max_task_retries": retries, "num_gpus": 1 if settings.use_gpu else 0}
    actors = [
        remote_actor.options(**options).remote(
            model_url, statistics_url, sampler_json(chosen), settings.decode_batch_rows, settings.device
        )
        for _ in range(workers)
    ]
    records: list[ShardRecord] = []
    reused = 0
    try:
        pool = ActorPool(actors)
        for payload in pool.map_unordered(
            lambda actor, spec: actor.write.remote(spec.to_json(), settings.output_url, run_id), plan
        ):
            record = ShardRecord.from_json(payload["record"])
            reused += payload["reused"]
            records.append(record)
            if on_shard is not None:
                on_shard(record)
        usage = ray.get([actor.usage.remote() for actor in actors])
    except Exception as exc:
        _report_stop(settings.output_url, len(records), len(plan))
        cause = user_error_in(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
    if reused:
        logger.info("resumed: %d of %d shards were already done and intact", reused, len(plan))
    return sorted(records, key=lambda r: r.index), usage


def _report_stop(output_url: str, done: int, planned: int) -> None:
    output.abandon_claim(output_url)
    logger.error(
        "generation stopped with %d of %d shards written to %s; run again with --resume to finish",
        done,
        planned,
        storage.redact_url(output_url),
    )


def worker_device(device: str) -> str:
    """The device a worker decodes on; a GPU that Ray assigned but torch cannot see is an error, not a CPU run."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "generation.use_gpu is true but this worker sees no CUDA device (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}); install the CUDA build of torch on the GPU nodes "
            "(deploy/Dockerfile VARIANT=cuda) or set generation.use_gpu: false"
        )
    return device


@ray.remote(num_cpus=1)
class GenerationActor:
    """Holds one loaded model, its statistics and a fitted sampler for many shards."""

    def __init__(
        self, model_url: str, statistics_url: str, sampler: dict[str, Any], batch_rows: int, device: str
    ) -> None:
        torch.set_num_threads(1)
        bundle, posterior = load_artifacts(model_url, statistics_url)
        fitted = build_sampler(SamplerConfig.model_validate(sampler)).fit(posterior)
        self.generator = ShardGenerator(bundle, posterior, fitted, batch_rows, worker_device(device))
        self.counts: dict[str, Any] = {"pid": os.getpid(), "shards": 0, "rows": 0, "seconds": 0.0}
        if device == "cuda":
            self.counts["gpu"] = torch.cuda.get_device_name()

    def write(self, spec: dict[str, Any], output_url: str, run_id: str) -> dict[str, Any]:
        """Write one shard and its record, or reuse it if this run already finished it intact."""
        shard = ShardSpec(**spec)
        done = output.done_record(output_url, run_id, shard.name)
        if done is not None:
            return {"record": done.to_json(), "reused": True}
        started = time.perf_counter()
        record = write_shard(self.generator.generate(shard), output_url, shard.index, shard.name)
        output.write_record(output_url, run_id, record)
        self.counts["shards"] += 1
        self.counts["rows"] += record.rows
        self.counts["seconds"] += time.perf_counter() - started
        return {"record": record.to_json(), "reused": False}

    def usage(self) -> dict[str, Any]:
        """This worker process's share of the run and its peak resident memory."""
        seconds = round(float(self.counts["seconds"]), 3)
        return {**self.counts, "seconds": seconds, "peak_rss_bytes": steps.peak_rss_bytes()}
