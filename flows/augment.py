"""The augmentation flow: train -> aggregate-posterior statistics -> evaluation of every sampler -> generation.

Runs on Prefect's ephemeral API by default; set PREFECT_API_URL to run against a Prefect server. Each step is a
task that retries transient failures (a lost Ray worker, a flaky object store) with backoff, but not the user's own
mistakes (bad config, bad data, an occupied output), which fail at once with their one-line message.

A rerun on unchanged input files and config costs nothing: each step finds its own record beside its artifact
(`vae_pipeline.steps`) and skips, and generation finds its committed manifest. Each flow run publishes a Markdown
summary and a table of per-step timings as Prefect artifacts.

`run_augment` runs the flow with a progress reporter (the CLI's console): every step reports to it, and a step
submitted as a Ray Job at least starts and ends there.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import get_run_context
from prefect.tasks import Task

from vae_pipeline import steps, storage
from vae_pipeline.bundle import default_statistics_url
from vae_pipeline.config import PipelineConfig, load_config, parse_config
from vae_pipeline.errors import VaePipelineError
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.evaluation.store import MARKDOWN_FILE, REPORT_FILE, default_evaluation_url
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import manifest_url, read_manifest
from vae_pipeline.generation.writer import ShardRecord
from vae_pipeline.logs import log_context
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.progress import NO_PROGRESS, Progress, current_progress, reporting_to
from vae_pipeline.ray_jobs import config_for_job, is_jobs_address, run_step_as_job, step_entrypoint
from vae_pipeline.training.job import run_training

StepResult = dict[str, Any]  # {"step", "url", "seconds", "cached"}
_STEP_NAMES = {"train": "train", "stats": "statistics", "evaluate": "evaluate", "generate": "generate"}


def run_augment(config: dict[str, Any], progress: Progress = NO_PROGRESS) -> str:
    """Run the `augment` flow on `config` with every step reporting to `progress`; returns the manifest URL.

    The progress travels through `reporting_to`, not as a flow parameter: Prefect records parameters as JSON.
    """
    with reporting_to(progress):
        return str(augment(config=config))


def retry_unless_user_error(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry infrastructure failures; a VaePipelineError is the user's to fix, so retrying cannot help."""
    try:
        state.result()
    except VaePipelineError:
        return False
    except Exception:
        return True
    return True


_TASK_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [10, 30, 90],  # backoff: a restarting node or a throttled store needs time
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_unless_user_error,
    "cache_policy": NO_CACHE,  # caching is by input and config, in vae_pipeline.steps, not by task arguments
}


def _run_step(step: str, artifact_url: str, action: Any) -> StepResult:
    """Run one step with its name on every log line; `cached` when the step's record did not change."""
    before = steps.read_record(artifact_url)
    started = time.perf_counter()
    with log_context(run_id=_flow_run_id(), step=step):
        url = action()
    after = steps.read_record(artifact_url)
    cached = before is not None and after is not None and before.to_json() == after.to_json()
    seconds = round(time.perf_counter() - started, 2)
    get_run_logger().info("%s %s in %.1fs: %s", step, "reused" if cached else "done", seconds, url)
    return {"step": step, "url": url, "seconds": seconds, "cached": cached}


def on_cluster_or_here(pipeline: PipelineConfig, command: str, result_url: str, here: Any, **options: Any) -> Any:
    """Run a step here (local Ray, `auto` or `ray://`), or as a Ray Job when `ray.address` is a dashboard URL.

    The job's submission id derives from the flow run and the step, so a retry of this task attaches to a job
    still running and skips one that succeeded (`vae_pipeline.ray_jobs`); the job runs the same CLI step with this
    flow's config, written beside the model where every node can read it.
    """
    address = pipeline.ray.address
    if not is_jobs_address(address):
        return here
    flow_run = _flow_run_id()
    config_url = storage.join_url(pipeline.model_url, "_runs", flow_run, "config.json")
    storage.write_json(config_url, config_for_job(pipeline).to_json())
    # --verbose: the job's log on the cluster keeps Ray's and Prefect's lines, as the cluster's own record.
    entrypoint = step_entrypoint(command, config_url, verbose=True, **options)
    logger = get_run_logger()
    progress = current_progress()

    def as_job() -> str:
        progress.start(_STEP_NAMES[command])
        submission_id = run_step_as_job(address, f"vae-{flow_run}-{command}", entrypoint, log=logger.info)
        progress.finish(f"Ray job {submission_id}")
        return result_url

    return as_job


@task(name="train", **_TASK_OPTIONS)
def train_task(config: dict[str, Any]) -> StepResult:
    pipeline = parse_config(config)
    here = lambda: run_training(pipeline, current_progress())  # noqa: E731
    action = on_cluster_or_here(pipeline, "train", pipeline.model_url, here)
    return _run_step("train", pipeline.model_url, action)


@task(name="statistics", **_TASK_OPTIONS)
def statistics_task(config: dict[str, Any], model_url: str) -> StepResult:
    pipeline = parse_config(config)
    statistics_url = default_statistics_url(model_url)
    here = lambda: run_statistics(pipeline, model_url=model_url, progress=current_progress())  # noqa: E731
    action = on_cluster_or_here(pipeline, "stats", statistics_url, here, model=model_url)
    return _run_step("statistics", statistics_url, action)


@task(name="evaluate", **_TASK_OPTIONS)
def evaluate_task(config: dict[str, Any], model_url: str, statistics_url: str) -> StepResult:
    """Score every sampler and publish the report's Markdown as a flow artifact."""
    pipeline = parse_config(config)
    evaluation_url = default_evaluation_url(model_url)
    here = lambda: run_evaluation(  # noqa: E731
        pipeline, model_url=model_url, statistics_url=statistics_url, progress=current_progress()
    )
    report_url = storage.join_url(evaluation_url, REPORT_FILE)
    action = on_cluster_or_here(pipeline, "evaluate", report_url, here, model=model_url, statistics=statistics_url)
    result = _run_step("evaluate", evaluation_url, action)
    markdown = storage.read_bytes(storage.join_url(default_evaluation_url(model_url), MARKDOWN_FILE)).decode()
    create_markdown_artifact(markdown=markdown, key="sampler-evaluation", description="Which sampler? (vae-pipeline)")
    return result


@task(name="generate", **_TASK_OPTIONS)
def generate_task(config: dict[str, Any], model_url: str, statistics_url: str) -> StepResult:
    """Generate with resume on, so a retry (or a rerun of the flow) finishes an interrupted run, never restarts it."""
    logger = get_run_logger()

    def log_shard(record: ShardRecord) -> None:
        logger.info("shard %s done: %d rows, %d bytes", record.name, record.rows, record.bytes)

    pipeline = parse_config(config).with_overrides({"generation.resume": True})
    output_url = pipeline.generation.output_url
    here = lambda: run_generation(  # noqa: E731
        pipeline, model_url=model_url, statistics_url=statistics_url, on_shard=log_shard, progress=current_progress()
    )
    options = {"model": model_url, "statistics": statistics_url, "resume": True}
    action = on_cluster_or_here(pipeline, "generate", manifest_url(output_url), here, **options)
    before = read_manifest(output_url)
    started = time.perf_counter()
    with log_context(run_id=_flow_run_id(), step="generate"):
        url = action()
    after = read_manifest(output_url)
    cached = before is not None and after is not None and before.to_json() == after.to_json()
    return {"step": "generate", "url": url, "seconds": round(time.perf_counter() - started, 2), "cached": cached}


@flow(name="vae-augment", log_prints=True)
def augment(config: dict[str, Any] | None = None, config_url: str | None = None) -> str:
    """Train a VAE on the configured table, compute its aggregate-posterior statistics, generate synthetic rows.

    Args:
        config: a pipeline config as a mapping (what `PipelineConfig.to_json()` gives); wins over `config_url`.
        config_url: a YAML config at any URL.

    Returns:
        The URL of the synthetic dataset's `_manifest.json`.
    """
    pipeline = _resolve(config, config_url)
    as_json = pipeline.to_json()
    trained = train_task(as_json)
    statistics = statistics_task(as_json, trained["url"])
    evaluated = evaluate_task(as_json, trained["url"], statistics["url"])
    generated = generate_task(as_json, trained["url"], statistics["url"])
    results = [trained, statistics, evaluated, generated]
    publish_summary(pipeline, results)
    get_run_logger().info("synthetic dataset committed: %s", generated["url"])
    return str(generated["url"])


def publish_summary(pipeline: PipelineConfig, results: list[StepResult]) -> None:
    """A Markdown artifact (what ran, rows, sampler, links) and a table artifact of per-step timings."""
    manifest = read_manifest(pipeline.generation.output_url)
    rows = [{k: r[k] for k in ("step", "seconds", "cached", "url")} for r in results]
    create_table_artifact(table=rows, key="step-timings", description="Per-step wall time (vae-pipeline)")
    create_markdown_artifact(markdown=summary_markdown(pipeline, results, manifest), key="augmentation-run")


def summary_markdown(pipeline: PipelineConfig, results: list[StepResult], manifest: Any) -> str:
    lines = ["# vae-pipeline augmentation run", ""]
    if manifest is not None:
        sampler = manifest.sampler.get("name")
        lines += [
            f"- **rows**: {manifest.rows:,} in {len(manifest.shards)} shards ({manifest.bytes / 1e6:.2f} MB)",
            f"- **sampler**: `{sampler}` (asked for `{manifest.extra.get('sampler_requested', sampler)}`)",
            f"- **manifest**: `{storage.redact_url(results[-1]['url'])}`",
            f"- **evaluation report**: `{storage.redact_url(default_evaluation_url(pipeline.model_url))}/report.md`",
            f"- **model**: `{storage.redact_url(pipeline.model_url)}` (`{manifest.bundle_fingerprint[:12]}`)",
            "",
        ]
    lines += ["| step | seconds | reused |", "|---|---:|---|"]
    lines += [f"| {r['step']} | {r['seconds']:.1f} | {'yes' if r['cached'] else 'no'} |" for r in results]
    return "\n".join(lines) + "\n"


def _flow_run_id() -> str:
    try:
        context = get_run_context()
    except Exception:  # outside a run (a plain call in a test): no id to show
        return "-"
    run = getattr(context, "flow_run", None) or getattr(getattr(context, "task_run", None), "flow_run_id", None)
    return str(getattr(run, "id", run) or "-")


def _resolve(config: dict[str, Any] | None, config_url: str | None) -> PipelineConfig:
    if config is not None:
        return parse_config(config)
    if config_url is not None:
        return load_config(config_url)
    return PipelineConfig()


if __name__ == "__main__":
    augment()
