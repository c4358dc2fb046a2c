"""The augmentation flow: train -> aggregate-posterior statistics -> evaluation of every sampler -> generation.

Runs on Prefect's ephemeral API by default; set PREFECT_API_URL to run against a Prefect server. Each step is a
task that retries transient failures (a lost Ray worker, a flaky object store) but not the user's own mistakes
(bad config, bad data, an occupied output), which fail at once with their one-line message.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import Task

from vae_pipeline import storage
from vae_pipeline.config import PipelineConfig, load_config, parse_config
from vae_pipeline.errors import VaePipelineError
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.evaluation.store import MARKDOWN_FILE, default_evaluation_url
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.writer import ShardRecord
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.training.ray_train import run_training


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
    "retries": 2,
    "retry_delay_seconds": [5, 30],
    "retry_condition_fn": retry_unless_user_error,
    "cache_policy": NO_CACHE,
}


@task(name="train", **_TASK_OPTIONS)
def train_task(config: dict[str, Any]) -> str:
    return run_training(parse_config(config))


@task(name="statistics", **_TASK_OPTIONS)
def statistics_task(config: dict[str, Any], model_url: str) -> str:
    return run_statistics(parse_config(config), model_url=model_url)


@task(name="evaluate", **_TASK_OPTIONS)
def evaluate_task(config: dict[str, Any], model_url: str, statistics_url: str) -> str:
    """Score every sampler and publish the report's Markdown as a flow artifact."""
    report_url = run_evaluation(parse_config(config), model_url=model_url, statistics_url=statistics_url)
    markdown = storage.read_bytes(storage.join_url(default_evaluation_url(model_url), MARKDOWN_FILE)).decode()
    create_markdown_artifact(markdown=markdown, key="sampler-evaluation", description="Which sampler? (vae-pipeline)")
    return report_url


@task(name="generate", **_TASK_OPTIONS)
def generate_task(config: dict[str, Any], model_url: str, statistics_url: str) -> str:
    """Generate with resume on, so a retry (or a rerun of the flow) finishes an interrupted run, never restarts it."""
    logger = get_run_logger()

    def log_shard(record: ShardRecord) -> None:
        logger.info("shard %s done: %d rows, %d bytes", record.name, record.rows, record.bytes)

    pipeline = parse_config(config).with_overrides({"generation.resume": True})
    return run_generation(pipeline, model_url=model_url, statistics_url=statistics_url, on_shard=log_shard)


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
    model_url = train_task(as_json)
    statistics_url = statistics_task(as_json, model_url)
    evaluate_task(as_json, model_url, statistics_url)
    manifest_url = generate_task(as_json, model_url, statistics_url)
    get_run_logger().info("synthetic dataset committed: %s", manifest_url)
    return manifest_url


def _resolve(config: dict[str, Any] | None, config_url: str | None) -> PipelineConfig:
    if config is not None:
        return parse_config(config)
    if config_url is not None:
        return load_config(config_url)
    return PipelineConfig()


if __name__ == "__main__":
    augment()
