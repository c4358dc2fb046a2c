"""Sharded generation, exactly once: in this process when one suffices, else on Ray actors that write shard after shard.

The driver plans the shards, chooses where they are written (`vae_pipeline.executor`), claims the output (refusing
another run's unless overwrite), has every shard written by a `ShardWriter` (in this process, or one per Ray actor)
and writes `_manifest.json` last (the protocol is in `output.py`). A Ray worker process that dies is restarted and
its shard retried; the retried shard has the same seed and so the same bytes, whichever executor writes it. A run
that stops anyway keeps its finished shards, and `resume` redoes only the missing or damaged ones; a committed run
that `resume` finds intact is verified here, without starting Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.util.actor_pool import ActorPool

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, default_statistics_url
from vae_pipeline.config import PipelineConfig, SamplerConfig
from vae_pipeline.data import open_source
from vae_pipeline.evaluation.store import default_evaluation_url
from vae_pipeline.executor import Executor, Workload, choose_executor, one_thread
from vae_pipeline.generation import output
from vae_pipeline.generation.augment import AugmentPlan, plan_augment
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
from vae_pipeline.generation.shard_writer import (
    WRITER_THREADS,
    ShardWriter,
    load_artifacts,
    worker_device,
)
from vae_pipeline.generation.worker import class_sampler
from vae_pipeline.generation.writer import ShardRecord
from vae_pipeline.progress import NO_PROGRESS, Progress, plural
from vae_pipeline.resources import require_gpus
from vae_pipeline.runtime import ensure_ray, user_errors_raised
from vae_pipeline.samplers.store import fitted_sampler, prior_digest, statistics_digest

logger = logging.getLogger(__name__)

ShardCallback = Callable[[ShardRecord], None]
Payload = dict[str, Any]  # what `ShardWriter.write` returns: the shard's record and whether it was reused

__all__ = ["load_artifacts", "resolve_sampler", "reused_generation", "run_generation", "worker_device"]


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


@dataclass(frozen=True)
class _Run:
    """One generation run, settled before any shard is written."""

    config: PipelineConfig
    model_url: str
    statistics_url: str
    bundle: ModelBundle
    sampler: SamplerConfig
    evaluation: dict[str, Any] | None
    run_id: str
    plan: list[ShardSpec]
    augment: AugmentPlan | None = None

    def writer_args(self) -> tuple[str, str, dict[str, Any], int, str, str | None]:
        """`ShardWriter`'s arguments, plain values that a Ray actor is built from as well."""
        settings = self.config.generation
        return (
            self.model_url,
            self.statistics_url,
            sampler_json(self.sampler),
            settings.decode_batch_rows,
            settings.device,
            None if self.augment is None else self.augment.settings.provenance_column,
        )


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
    run = _settle(config, model_url, statistics_url)
    plan = run.plan
    progress.start("generate", len(plan), "shards")
    committed = read_manifest(settings.output_url)
    repairing = committed is not None and committed.run_id == run.run_id
    todo = plan
    if committed is not None and repairing:
        # resume checks the checksums, here and once; without it a listing with the recorded sizes suffices
        damaged = {
            r.name for r in committed.shards if not output.shard_present(settings.output_url, r, settings.resume)
        }
        if not damaged:
            return _reuse(settings.output_url, committed, settings.resume, progress)
        todo = [spec for spec in plan if spec.name in damaged]
        progress.advance(len(plan) - len(todo), "intact")

    def committed_shard(record: ShardRecord) -> None:
        progress.advance(1, record.name)
        if on_shard is not None:
            on_shard(record)

    written = _claim_and_write(run, plan, todo, lease, committed_shard)
    summary = generation_summary(sum(r.rows for r in written.records), len(written.records), written.seconds)
    if repairing:  # the commit stands: the rewritten shards have the bytes it lists
        logger.info("rewrote %d of %d shards of committed run %s", len(todo), len(plan), run.run_id)
        progress.finish(f"repaired: {len(todo)} of {plural(len(plan), 'shard')} rewritten ({summary})")
        return manifest_url(settings.output_url)
    where = {"executor": written.executor, "workers": written.workers}
    manifest = _manifest(run, written.records, where, time.perf_counter() - started)
    lease.check()  # a driver whose lease expired and was taken over must not commit
    url = write_manifest(settings.output_url, manifest)
    logger.info("wrote %d rows in %d shards to %s", manifest.rows, len(plan), storage.redact_url(settings.output_url))
    progress.finish(summary)
    return url


@dataclass(frozen=True)
class _Written:
    executor: Executor
    records: list[ShardRecord]  # in shard order
    workers: list[dict[str, Any]]  # each writer's usage
    seconds: float


def _claim_and_write(
    run: _Run, plan: list[ShardSpec], todo: list[ShardSpec], lease: OutputLease, on_shard: ShardCallback
) -> _Written:
    """Choose where the shards of `todo` are written, claim the output for the run of `plan`, write them."""
    settings = run.config.generation
    executor = _choose_executor(run.config, len(todo))
    rows = sum(spec.rows for spec in plan)
    claim = output.RunClaim(run_id=run.run_id, shards=len(plan), rows=rows, config=run.config.to_json())
    if executor == "ray" and settings.use_gpu:  # checked before the claim: a cluster without GPUs leaves no trace
        ensure_ray(run.config.ray)
        require_gpus(min(settings.num_workers, len(todo)), run.config.ray.gpu_wait_s, what="generation worker")
    output.claim_output(settings.output_url, claim, settings.overwrite, settings.resume, lease)
    writing = time.perf_counter()
    records, workers = _write_all(todo, executor, run, on_shard)
    seconds = time.perf_counter() - writing
    output.remove_strays(settings.output_url, {spec.name for spec in plan})
    return _Written(executor, records, workers, seconds)


def _settle(config: PipelineConfig, model_url: str | None, statistics_url: str | None) -> _Run:
    """Load the artifacts, choose the sampler (failing fast on one that cannot serve this model), name the run."""
    settings = config.generation
    model_url = model_url or config.model_url
    statistics_url = statistics_url or default_statistics_url(model_url)
    bundle, posterior = load_artifacts(model_url, statistics_url)
    per_class = not bundle.transform.conditional  # a CVAE takes its class as the condition, with any sampler
    chosen, evaluation = resolve_sampler(config, model_url, bundle.fingerprint, per_class=per_class)
    fitted = fitted_sampler(chosen, posterior, statistics_url)
    augment, plan, extra = None, plan_shards(settings.rows, settings.rows_per_shard, settings.seed), None
    if config.augment.enabled:
        source = open_source(bundle.config.data)  # the rows the model was trained on are the rows augmented
        augment = plan_augment(config.augment, source, bundle.transform)
        class_sampler(fitted, posterior, 0, bundle.transform)  # a sampler that cannot draw one class fails here
        plan = augment.specs(settings)
        extra = {"augment": augment.to_json(), "input": steps.input_stamp(source.filesystem, source.files)}
    # Where the shards are written is no part of the run's identity: every executor writes the same bytes.
    run_id = generation_run_id(
        bundle_fingerprint=bundle.fingerprint,
        statistics_digest=statistics_digest(statistics_url),
        sampler=sampler_json(chosen),
        seed=settings.seed,
        rows=settings.rows,
        rows_per_shard=settings.rows_per_shard,
        batch_rows=settings.decode_batch_rows,
        device=settings.device,
        extra=extra,
        sampler_state=prior_digest(statistics_url, chosen.name),
    )
    return _Run(config, model_url, statistics_url, bundle, chosen, evaluation, run_id, plan, augment)


def reused_generation(config: PipelineConfig, model_url: str, statistics_url: str) -> str | None:
    """`reused: ...` when the output already holds this run, committed, every shard intact (checksums verified)."""
    run = _settle(config, model_url, statistics_url)
    output_url = config.generation.output_url
    committed = read_manifest(output_url)
    if committed is None or committed.run_id != run.run_id:
        return None
    if not all(output.shard_present(output_url, record, True) for record in committed.shards):
        return None
    return _reused_summary(committed, verified=True)


def _reuse(output_url: str, committed: Manifest, verified: bool, progress: Progress) -> str:
    """The output already holds this run, whole: nothing to write, no claim, no Ray."""
    how = "checksums verified" if verified else "sizes checked"
    logger.info("%s already holds run %s (%s); nothing to do", storage.redact_url(output_url), committed.run_id, how)
    progress.finish(_reused_summary(committed, verified))
    return manifest_url(output_url)


def _reused_summary(committed: Manifest, verified: bool) -> str:
    shards = plural(len(committed.shards), "shard")
    return f"reused: {plural(committed.rows, 'row')} in {shards}" + (" (checksums verified)" if verified else "")


def _choose_executor(config: PipelineConfig, shards: int) -> Executor:
    settings = config.generation
    work = Workload("generation", workers=min(settings.num_workers, shards), use_gpu=settings.use_gpu)
    return choose_executor(settings.executor, config.ray, work)


def _manifest(run: _Run, records: list[ShardRecord], where: dict[str, Any], seconds: float) -> Manifest:
    settings = run.config.generation
    return Manifest(
        run_id=run.run_id,
        rows=sum(r.rows for r in records),
        shards=records,
        schema=schema_json(
            run.bundle.transform.schema if run.augment is None else run.augment.schema(run.bundle.transform)
        ),
        bundle_fingerprint=run.bundle.fingerprint,
        model_url=run.model_url,
        statistics_url=run.statistics_url,
        sampler=sampler_json(run.sampler),
        seed=settings.seed,
        rows_per_shard=settings.rows_per_shard,
        config=run.config.to_json(),
        extra={
            "sampler_requested": run.config.sampler.name,
            "evaluation": run.evaluation,
            **where,
            "seconds": round(seconds, 3),
            "history": step_history(run.model_url, run.statistics_url),
            **({} if run.augment is None else {"augment": run.augment.to_json()}),
        },
    )


def generation_summary(rows: int, shards: int, seconds: float) -> str:
    """The generate step's key figures: `100,000 rows in 4 shards, 120,000 rows/s`."""
    return f"{plural(rows, 'row')} in {plural(shards, 'shard')}, {rows / max(seconds, 1e-9):,.0f} rows/s"


def step_history(model_url: str, statistics_url: str) -> list[dict[str, Any]]:
    """What the upstream steps recorded (when, how long, peak memory), so a dataset carries its lineage."""
    evaluation_url = default_evaluation_url(model_url)
    return steps.history({"train": model_url, "statistics": statistics_url, "evaluate": evaluation_url})


def _write_all(
    todo: list[ShardSpec], executor: Executor, run: _Run, on_shard: ShardCallback
) -> tuple[list[ShardRecord], list[dict[str, Any]]]:
    """Every shard of `todo`, written or found done; on failure the finished shards stay for `resume`.

    Returns the records in shard order and each writer's usage (`ShardWriter.usage`).
    """
    output_url = run.config.generation.output_url
    records: list[ShardRecord] = []
    reused = 0

    def accept(payload: Payload) -> None:
        nonlocal reused
        record = ShardRecord.from_json(payload["record"])
        reused += payload["reused"]
        records.append(record)
        on_shard(record)

    write = _write_here if executor == "local" else _write_on_ray
    try:
        with user_errors_raised(Exception):
            usage = write(todo, run, accept)
    except Exception:
        _report_stop(output_url, len(records), len(todo))
        raise
    if reused:
        logger.info("resumed: %d of %d shards were already done and intact", reused, len(todo))
    return sorted(records, key=lambda r: r.index), usage


def _write_here(todo: list[ShardSpec], run: _Run, accept: Callable[[Payload], None]) -> list[dict[str, Any]]:
    """The local executor: one `ShardWriter` in this process, shard after shard, on the actor's thread count."""
    with one_thread():
        writer = ShardWriter(*run.writer_args())
        for spec in todo:
            accept(writer.write(spec.to_json(), run.config.generation.output_url, run.run_id))
        return [writer.usage()]


def _write_on_ray(todo: list[ShardSpec], run: _Run, accept: Callable[[Payload], None]) -> list[dict[str, Any]]:
    """The Ray executor: a pool of `GenerationActor`s, restarted (and their shard retried) when a process dies."""
    settings = run.config.generation
    ensure_ray(run.config.ray)
    retries = settings.max_shard_retries
    remote_actor: Any = GenerationActor  # ray.remote's class has .remote, which type checkers cannot see
    options = {"max_restarts": retries, "max_task_retries": retries, "num_gpus": 1 if settings.use_gpu else 0}
    workers = min(settings.num_workers, len(todo))
    actors = [remote_actor.options(**options).remote(*run.writer_args()) for _ in range(workers)]
    try:
        pool = ActorPool(actors)
        for payload in pool.map_unordered(
            lambda actor, spec: actor.write.remote(spec.to_json(), settings.output_url, run.run_id), todo
        ):
            accept(payload)
        return list(ray.get([actor.usage.remote() for actor in actors]))
    finally:
        for actor in actors:
            ray.kill(actor)


def _report_stop(output_url: str, done: int, planned: int) -> None:
    output.abandon_claim(output_url)
    logger.error(
        "generation stopped with %d of %d shards written to %s; run again with --resume to finish",
        done,
        planned,
        storage.redact_url(output_url),
    )


@ray.remote(num_cpus=1)
class GenerationActor:
    """A `ShardWriter` in its own Ray worker process, on one thread (the actor holds one CPU)."""

    def __init__(
        self,
        model_url: str,
        statistics_url: str,
        sampler: dict[str, Any],
        batch_rows: int,
        device: str,
        provenance: str | None = None,
    ) -> None:
        torch.set_num_threads(WRITER_THREADS)  # for good: this process is the actor's alone
        self.writer = ShardWriter(model_url, statistics_url, sampler, batch_rows, device, provenance)

    def write(self, spec: dict[str, Any], output_url: str, run_id: str) -> Payload:
        return self.writer.write(spec, output_url, run_id)

    def usage(self) -> dict[str, Any]:
        return self.writer.usage()
