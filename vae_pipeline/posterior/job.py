"""The aggregate-posterior statistics job: encode the training rows with the trained encoder, in one pass.

Each batch of input rows becomes a `PosteriorStats` (running sums, per-class sums, a bottom-k reservoir) and the
partial statistics are merged (the merge is associative, so arrival order does not matter) and finalised beside the
model bundle. Where that runs is `statistics.executor` (`vae_pipeline.executor`): in this process, streaming the
input batch by batch (`summarize_batch`), or on Ray Data, whose `SummarizeBatch` actors run the same function on
`statistics.num_workers` processes and ship each batch's statistics back serialised with safetensors. On a
large input each batch ships only its reservoir candidates, the rows under a key bound that the reservoir of all
rows lies below (checked, with a second pass without the bound if it did not hold).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
import torch
from ray.exceptions import RayError

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, default_statistics_url, load_bundle
from vae_pipeline.config import DataConfig, PipelineConfig, PriorsConfig, StatisticsConfig
from vae_pipeline.data import TableSource, open_source
from vae_pipeline.errors import DataError
from vae_pipeline.executor import Workload, choose_executor, one_thread
from vae_pipeline.posterior.aggregate import (
    JSON_NAME,
    AggregatePosterior,
    finalize_posterior,
    load_posterior,
    save_posterior,
)
from vae_pipeline.posterior.stats import PosteriorStats
from vae_pipeline.progress import NO_PROGRESS, Progress, plural
from vae_pipeline.resources import require_gpus
from vae_pipeline.runtime import ensure_ray, is_client_address, read_dataset, run_as_driver, user_errors_raised
from vae_pipeline.samplers.store import PRIOR_FORMAT, train_prior, train_priors
from vae_pipeline.split import Split, row_keys, split_codes

logger = logging.getLogger(__name__)


def run_statistics(
    config: PipelineConfig,
    model_url: str | None = None,
    statistics_url: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> str:
    """Compute and store the aggregate-posterior statistics of the bundle at `model_url`; returns their URL.

    The data section comes from the bundle (the rows it was trained on); `config` supplies the statistics
    settings and the Ray address. `progress` counts the input rows as their batches are summarised.
    """
    progress.start("statistics", None, "rows")
    model_url = model_url or config.model_url
    statistics_url = statistics_url or default_statistics_url(model_url)
    bundle = load_bundle(model_url)
    source = open_source(bundle.config.data)
    key = statistics_step_key(config, bundle, source)
    reused = _reused(statistics_url, key)
    if reused is not None:
        progress.finish(reused)
        return statistics_url
    posterior_json = storage.join_url(statistics_url, JSON_NAME)
    here = NO_PROGRESS if is_client_address(config.ray.address) else progress  # Ray Client: runs on the head node
    with steps.timed() as clock:
        summary = run_as_driver(config.ray, _compute, config, bundle, source, model_url, statistics_url, here)
    record = steps.finished_record("statistics", key, steps.file_digest(posterior_json) or "", clock.seconds)
    steps.write_record(statistics_url, record)
    progress.finish(statistics_summary(summary))
    return statistics_url


def statistics_step_key(config: PipelineConfig, bundle: ModelBundle, source: TableSource) -> str:
    """Everything that decides the statistics: the model, its input files and the statistics settings."""
    return steps.step_key(
        "statistics",
        model=bundle.fingerprint,
        input=steps.input_stamp(source.filesystem, source.files),
        statistics=config.statistics.model_dump(mode="json", exclude={"num_workers", "executor"}),
        priors_format=PRIOR_FORMAT,
    )


def reused_statistics(config: PipelineConfig, model_url: str, statistics_url: str) -> str | None:
    """`reused: <summary>` when the statistics at `statistics_url` belong to this model, input and settings."""
    bundle = load_bundle(model_url)
    return _reused(statistics_url, statistics_step_key(config, bundle, open_source(bundle.config.data)))


def _reused(statistics_url: str, key: str) -> str | None:
    found = steps.reused_json(statistics_url, "statistics", key, storage.join_url(statistics_url, JSON_NAME))
    return None if found is None else "reused: " + statistics_summary(found["summary"])


def statistics_summary(summary: dict[str, Any]) -> str:
    """The statistics step's key figures from the posterior's summary: `4,000 training rows, 12/16 active units`."""
    line = f"{plural(summary['count'], 'training row')}, {summary['active_units']}/{summary['latent_dim']} active units"
    priors = summary.get("priors") or {}
    if priors:
        line += "; priors trained: " + ", ".join(_prior_summary(name, info) for name, info in priors.items())
    return line


def _prior_summary(name: str, info: dict[str, Any]) -> str:
    device = info.get("device", "cpu")
    return f"{name} {info['seconds']:.1f}s" + ("" if device == "cpu" else f" on {device}")


def _compute(
    config: PipelineConfig,
    bundle: ModelBundle,
    source: TableSource,
    model_url: str,
    statistics_url: str,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Summarize the training rows, finalize and save the posterior; returns its summary."""
    data = bundle.config.data
    settings = config.statistics
    work = Workload("statistics", settings.num_workers, use_gpu=settings.priors.needs_gpu)
    local = choose_executor(settings.executor, config.ray, work) == "local"
    summarize = _summarize_here if local else _summarize
    if not local:
        ensure_ray(config.ray)
    rows = source.count_rows()
    progress.start("statistics", rows, "rows")
    train_share = 1.0 - data.validation_fraction - data.holdout_share
    bound = reservoir_key_bound(int(rows * train_share), settings.reservoir_size)
    total = summarize(config, bundle, source, model_url, bound, progress)
    if bound is not None and len(total.reservoir_keys) < min(settings.reservoir_size, total.n):
        logger.warning("fewer training rows than expected for the reservoir's key bound; summarizing again without")
        total = summarize(config, bundle, source, model_url, None)
    if total.n == 0:
        raise DataError("no training rows reached the statistics job; lower data.holdout_fraction")
    posterior = finalize_posterior(
        total, class_labels=list(bundle.transform.label_classes), config=settings, model_fingerprint=bundle.fingerprint
    )
    save_posterior(posterior, statistics_url)
    _log_summary(posterior)
    if local:
        priors = _train_priors_here(settings.priors, posterior, statistics_url)
    else:
        priors = _train_priors_on_ray(config, statistics_url)
    return {**posterior.summary(), "priors": priors}


def _train_priors_here(settings: PriorsConfig, posterior: AggregatePosterior, statistics_url: str) -> dict[str, Any]:
    """The learned priors in this process: on its GPU with `use_gpu` (the executor checked there is one)."""
    if settings.use_gpu:
        return train_priors(settings, posterior, statistics_url, "cuda")
    with one_thread():  # small networks on one core train fastest, and far faster on a busy machine
        return train_priors(settings, posterior, statistics_url)


def _train_priors_on_ray(config: PipelineConfig, statistics_url: str) -> dict[str, Any]:
    """Each learned prior in its own Ray task, side by side, with a GPU each under `use_gpu`.

    A task reads the statistics just stored at `statistics_url` (as generation actors do), so on a cluster the
    URL must be storage every node shares, and stores its prior there; the summaries come back here.
    """
    settings = config.statistics.priors
    if settings.needs_gpu:
        require_gpus(1, config.ray.gpu_wait_s, what="prior-training task")
    task = ray.remote(_train_prior_task).options(
        num_cpus=1, num_gpus=1 if settings.use_gpu else 0, max_retries=0, name="vae-pipeline:train-prior"
    )
    refs = {name: task.remote(settings.model_dump(mode="json"), name, statistics_url) for name in settings.requested()}
    with user_errors_raised(RayError):
        return {name: ray.get(ref) for name, ref in refs.items()}


def _train_prior_task(settings: dict[str, Any], name: str, statistics_url: str) -> dict[str, Any]:
    """A Ray task: train one learned prior on the stored statistics and store it beside them."""
    priors = PriorsConfig.model_validate(settings)
    device = "cuda" if priors.use_gpu else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    return train_prior(priors, name, load_posterior(statistics_url), statistics_url, device)


def reservoir_key_bound(expected_rows: int, reservoir_size: int) -> int | None:
    """A key below which the reservoir's rows all but surely lie: batches then ship only those candidates.

    Row keys are uniform over uint64, so the bound expects 2k + 10 sqrt(k) of `expected_rows` keys below it for a
    reservoir of k: the count falls short of k only if the estimate is more than about twice the true row count.
    None (every row a candidate) when the input is not much larger than the reservoir.
    """
    share = (2 * reservoir_size + 10 * math.sqrt(reservoir_size)) / max(expected_rows, 1)
    if expected_rows <= 4 * reservoir_size or share >= 0.5:
        return None
    return int(share * 2**64)


def _summarize(
    config: PipelineConfig,
    bundle: ModelBundle,
    source: TableSource,
    model_url: str,
    keys_below: int | None,
    progress: Progress = NO_PROGRESS,
) -> PosteriorStats:
    """Encode every training row on Ray Data actors and merge their per-batch statistics here, as they arrive."""
    settings = config.statistics
    partials = read_dataset(source).map_batches(
        SummarizeBatch,
        fn_constructor_kwargs={
            "model_url": model_url,
            "data": bundle.config.data.model_dump(mode="json"),
            "statistics": settings.model_dump(mode="json"),
            "keys_below": keys_below,
        },
        batch_format="pyarrow",
        batch_size=settings.batch_rows,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=settings.num_workers),
    )
    total = _empty_stats(bundle, settings)
    for batch in partials.iter_batches(batch_format="numpy", batch_size=None):
        for blob, rows in zip(batch["stats"], batch["rows"], strict=True):
            total = total.merge(PosteriorStats.from_bytes(blob))
            progress.advance(int(rows))
    return total


def _summarize_here(
    config: PipelineConfig,
    bundle: ModelBundle,
    source: TableSource,
    model_url: str,
    keys_below: int | None,
    progress: Progress = NO_PROGRESS,
) -> PosteriorStats:
    """Encode every training row in this process, batch by batch, with the bundle already loaded."""
    settings, data = config.statistics, bundle.config.data
    total = _empty_stats(bundle, settings)
    with one_thread():  # as each Ray Data actor runs
        for batch in source.batches(settings.batch_rows):
            total = total.merge(summarize_batch(bundle, data, settings, pa.Table.from_batches([batch]), keys_below))
            progress.advance(batch.num_rows)
    return total


def summarize_batch(
    bundle: ModelBundle, data: DataConfig, settings: StatisticsConfig, batch: pa.Table, keys_below: int | None
) -> PosteriorStats:
    """One batch of input rows -> the statistics of its training rows (an empty one when it holds none)."""
    batch = batch.filter(pa.array(split_codes(batch, data) == Split.TRAIN))
    stats = _empty_stats(bundle, settings)
    if batch.num_rows:
        transform = bundle.transform
        labels = transform.label_codes(batch) if transform.label_column else None
        mu, logvar = encode_rows(bundle, batch, labels)
        stats.update(mu, logvar, row_keys(batch, settings.seed), labels, keys_below=keys_below)
    return stats


def _empty_stats(bundle: ModelBundle, settings: StatisticsConfig) -> PosteriorStats:
    classes = len(bundle.transform.label_classes)
    return PosteriorStats.empty(bundle.model_config.latent_dim, classes, settings.reservoir_size)


class SummarizeBatch:
    """Ray Data actor: one Arrow batch of input rows -> one serialised `PosteriorStats` of its training rows."""

    def __init__(
        self, model_url: str, data: dict[str, Any], statistics: dict[str, Any], keys_below: int | None = None
    ) -> None:
        torch.set_num_threads(1)
        self.keys_below = keys_below
        self.bundle = load_bundle(model_url)
        self.data = DataConfig.model_validate(data)
        self.settings = StatisticsConfig.model_validate(statistics)

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        rows = batch.num_rows  # every input row counts towards progress, training row or not
        stats = summarize_batch(self.bundle, self.data, self.settings, batch, self.keys_below)
        return {"stats": np.array([stats.to_bytes()], dtype=object), "rows": np.array([rows], dtype=np.int64)}


def encode_rows(bundle: Any, batch: pa.Table, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """q(z|x) for each row: (mu, logvar), each (B, L) float64."""
    transform = bundle.transform
    x = torch.from_numpy(transform.transform(batch))
    condition = torch.from_numpy(transform.condition(labels)) if transform.conditional else None
    with torch.inference_mode():
        mu, logvar = bundle.model.encode(x, condition)
    return mu.double().numpy(), logvar.double().numpy()


def _log_summary(posterior: AggregatePosterior) -> None:
    summary = posterior.summary()
    logger.info("aggregate posterior: %s", summary)
