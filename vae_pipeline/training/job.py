"""The train step: a table in, a model bundle out, trained in this process or on Ray Train.

Everything that can fail on the user's input (the data, the transform fit) runs first, in this process. Then
`executor.choose_executor` decides where the epochs run: `local.py` (one process, tensors in memory) or
`ray_train.py` (a TorchTrainer over `training.num_workers` DDP workers, data streamed by Ray Data). Both run the
same epoch loop (`epochs.py`) and hand back the same `TrainedModel`, which becomes the bundle here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, save_bundle, stored_fingerprint
from vae_pipeline.config import PipelineConfig
from vae_pipeline.data import TableSource, open_source
from vae_pipeline.errors import ConfigError
from vae_pipeline.executor import Workload, choose_executor, one_thread
from vae_pipeline.models.base import ModelShape
from vae_pipeline.models.registry import Layout, build, model_shape
from vae_pipeline.progress import NO_PROGRESS, Progress, plural
from vae_pipeline.runtime import is_client_address, run_as_driver
from vae_pipeline.training.epochs import TrainedModel
from vae_pipeline.training.local import encode_splits, encoded_bytes, fit_local
from vae_pipeline.training.prepare import fit_table_transform, with_evaluable_holdout, with_table_batch_size
from vae_pipeline.transforms.table import TableTransform

logger = logging.getLogger(__name__)


def run_training(config: PipelineConfig, progress: Progress = NO_PROGRESS) -> str:
    """Train on `config.data.input_url` and write a model bundle to `config.model_url`; returns the bundle URL.

    `progress` sees the epochs as they finish. A rerun on unchanged input files and config reuses the bundle.
    """
    if storage.protocol_of(config.model_url) == "memory":
        raise ConfigError(
            "model_url memory://... lives in one process, but a step reads the bundle from its own process; "
            "use a local path or shared storage (s3://, gs://, ...)"
        )
    progress.start("train", config.training.epochs, "epochs")
    source = open_source(config.data)
    stamp = steps.input_stamp(source.filesystem, source.files)
    key = training_step_key(config, stamp)
    reused = _reused(config.model_url, key)
    if reused is not None:
        progress.finish(reused)
        return config.model_url
    # Through Ray Client the work runs on the head node, where this process's console is out of reach.
    here = NO_PROGRESS if is_client_address(config.ray.address) else progress
    with steps.timed() as clock:
        bundle = run_as_driver(config.ray, _train, config, source, stamp, here)
    summary = training_summary(bundle.metrics)
    record = steps.finished_record(
        "train", key, bundle.fingerprint, clock.seconds, epochs=len(bundle.metrics), summary=summary
    )
    steps.write_record(config.model_url, record)
    progress.finish(summary)
    return config.model_url


def reused_training(config: PipelineConfig) -> str | None:
    """`reused: <summary>` when the bundle at `model_url` was trained from these input files and settings."""
    source = open_source(config.data)
    return _reused(config.model_url, training_step_key(config, steps.input_stamp(source.filesystem, source.files)))


def _reused(model_url: str, key: str) -> str | None:
    cached = steps.cached_record(model_url, "train", key, stored_fingerprint(model_url))
    if cached is None:
        return None
    return "reused: " + cached.details.get("summary", plural(cached.details.get("epochs", 0), "epoch"))


def training_summary(metrics: list[dict[str, Any]]) -> str:
    """The train step's key figures: `30 epochs, best val loss 1.23 at epoch 27`."""
    epochs = plural(len(metrics), "epoch")
    scored = [m for m in metrics if math.isfinite(m.get("val_loss", math.nan))]
    if not scored:
        return epochs
    best = min(scored, key=lambda m: m["val_loss"])
    return f"{epochs}, best val loss {best['val_loss']:.4g} at epoch {best['epoch']}"


def _train(
    config: PipelineConfig, source: TableSource, stamp: list[dict[str, Any]], progress: Progress = NO_PROGRESS
) -> ModelBundle:
    config = with_evaluable_holdout(config, source)
    config = with_table_batch_size(config, expected_training_rows(config, source))
    started = time.perf_counter()
    transform = fit_table_transform(source, config)
    logger.info(
        "transform fitted in %.1fs: %d columns -> %d features",
        time.perf_counter() - started,
        len(source.columns),
        transform.output_dim,
    )
    model_config = model_config_for(config, transform)
    run_key = training_run_key(config, stamp)
    run_name = config.training.run_name or f"run-{run_key[:12]}"
    training = config.training
    work = Workload("training", training.num_workers, encoded_bytes(source.count_rows(), transform), training.use_gpu)
    if choose_executor(training.executor, config.ray, work) == "local":
        with one_thread():
            splits = encode_splits(source, transform, config.data)
            trained = fit_local(config, model_config, splits, run_key, run_name, progress)
    else:
        from vae_pipeline.training.ray_train import fit_on_ray  # Ray loads only when the step runs there

        trained = fit_on_ray(config, model_config, transform, source, run_key, run_name, progress)
    bundle = _save(trained, model_config, transform, config)
    logger.info(
        "model bundle written to %s (fingerprint %s)", storage.redact_url(config.model_url), bundle.fingerprint[:12]
    )
    return bundle


def model_config_for(config: PipelineConfig, transform: TableTransform) -> ModelShape:
    """The model's shape: the architecture `model.architecture` picks (models/registry.py), sized by the
    transform's features and spans and the config's model settings."""
    layout = Layout(
        spans=list(transform.spans),
        data_dim=transform.output_dim,
        condition_dim=len(transform.label_classes) if transform.conditional else 0,
        image_shape=transform.image_shape() if transform.image_column else None,
    )
    return model_shape(config.model, layout)


def _save(
    trained: TrainedModel, model_config: ModelShape, transform: TableTransform, config: PipelineConfig
) -> ModelBundle:
    model = build(model_config)
    model.load_state_dict(trained.weights)
    return save_bundle(config.model_url, model, model_config, transform, config, trained.metrics)


def expected_training_rows(config: PipelineConfig, source: TableSource) -> int:
    """About how many rows the training split holds (the split is a seeded hash, so this is its expectation)."""
    data = config.data
    return int(source.count_rows() * (1.0 - data.validation_fraction - data.holdout_share))


def training_run_key(config: PipelineConfig, stamp: list[dict[str, Any]] | None = None) -> str:
    """What a resumable run must share: the input files, data, model and optimisation settings (epochs may grow,
    workers change); new data never resumes a checkpoint trained on the old."""
    training = config.training.model_dump(mode="json", exclude=_HOW_IT_RUNS | {"epochs", "early_stopping_patience"})
    data = config.data.model_dump(mode="json", exclude={"storage_options"})
    payload = {"data": data, "model": config.model.model_dump(mode="json"), "training": training, "input": stamp}
    return hashlib.sha256(storage.canonical_json(payload).encode()).hexdigest()


# Settings that decide how and where the epochs run, not what is learnt from what.
_HOW_IT_RUNS = {
    "num_workers",
    "use_gpu",
    "mixed_precision",
    "run_name",
    "keep_best",
    "executor",
    "checkpoint_every_epochs",
    "checkpoint_interval_s",
}


def training_step_key(config: PipelineConfig, stamp: list[dict[str, Any]]) -> str:
    """Everything that decides the bundle: the input files and the data, model and training settings."""
    exclude = {"num_workers", "run_name", "executor", "checkpoint_every_epochs", "checkpoint_interval_s"}
    training = config.training.model_dump(mode="json", exclude=exclude)
    data = config.data.model_dump(mode="json", exclude={"storage_options"})
    model = config.model.model_dump(mode="json")
    return steps.step_key("train", input=stamp, data=data, model=model, training=training)
