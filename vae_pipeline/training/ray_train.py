"""Distributed training with Ray Train: the step that turns a table into a model bundle.

The driver fits the transform in one streaming pass, Ray Data encodes the rows, and a `TorchTrainer` runs
`train_loop` on `training.num_workers` workers (DDP; GPU when `use_gpu`). Every epoch reports metrics and a
checkpoint under `<model_url>/checkpoints/<run_name>`; a rerun with the same run name resumes from the last one.
Rank 0 also tells the driver each epoch's losses as it finishes it (`epoch_reports.py`), so a progress bar moves.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, save_bundle, stored_fingerprint
from vae_pipeline.config import PipelineConfig, TrainingConfig
from vae_pipeline.data import open_source
from vae_pipeline.errors import ConfigError, VaePipelineError
from vae_pipeline.models.mlp_vae import MLPVAE, MLPVAEConfig, build_model
from vae_pipeline.progress import NO_PROGRESS, Progress, is_silent, plural
from vae_pipeline.resources import require_gpus
from vae_pipeline.runtime import ensure_ray, is_client_address, read_dataset, run_as_driver, user_error_in
from vae_pipeline.split import Split
from vae_pipeline.training.checkpoint import (
    TrainingState,
    load_model_weights,
    load_training_state,
    read_metrics,
    save_training_state,
)
from vae_pipeline.training.epoch_reports import EpochReports, tell_driver
from vae_pipeline.training.loop import evaluate, make_optimizer, precision_for, train_one_epoch
from vae_pipeline.training.prepare import EncodeRows, fit_table_transform, select_split, with_evaluable_holdout
from vae_pipeline.transforms.table import TableTransform

logger = logging.getLogger(__name__)

# Below this many encoded bytes the dataset is materialised once in the object store instead of re-read per epoch.
_MATERIALIZE_BYTES = 512 * 1024**2


def run_training(config: PipelineConfig, progress: Progress = NO_PROGRESS) -> str:
    """Train on `config.data.input_url` and write a model bundle to `config.model_url`; returns the bundle URL.

    Everything that can fail on the user's input (the data, the transform fit) runs before Ray starts. `progress`
    sees the epochs as the workers finish them.
    """
    if storage.protocol_of(config.model_url) == "memory":
        raise ConfigError(
            "model_url memory://... lives in one process, but Ray Train workers must reach its checkpoints; "
            "use a local path or shared storage (s3://, gs://, ...)"
        )
    progress.start("train", config.training.epochs, "epochs")
    source = open_source(config.data)
    stamp = steps.input_stamp(source.filesystem, source.files)
    key = training_step_key(config, stamp)
    cached = steps.cached_record(config.model_url, "train", key, stored_fingerprint(config.model_url))
    if cached is not None:
        progress.finish("reused: " + cached.details.get("summary", plural(cached.details.get("epochs", 0), "epoch")))
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


def training_summary(metrics: list[dict[str, Any]]) -> str:
    """The train step's key figures: `30 epochs, best val loss 1.23 at epoch 27`."""
    epochs = plural(len(metrics), "epoch")
    scored = [m for m in metrics if math.isfinite(m.get("val_loss", math.nan))]
    if not scored:
        return epochs
    best = min(scored, key=lambda m: m["val_loss"])
    return f"{epochs}, best val loss {best['val_loss']:.4g} at epoch {best['epoch']}"


def _train(
    config: PipelineConfig, source: Any, stamp: list[dict[str, Any]], progress: Progress = NO_PROGRESS
) -> ModelBundle:
    config = with_evaluable_holdout(config, source)
    started = time.perf_counter()
    transform = fit_table_transform(source, config)
    logger.info(
        "transform fitted in %.1fs: %d columns -> %d features",
        time.perf_counter() - started,
        len(source.columns),
        transform.output_dim,
    )
    model_config = MLPVAEConfig(
        data_dim=transform.output_dim,
        latent_dim=config.model.latent_dim,
        hidden_dims=list(config.model.hidden_dims),
        spans=list(transform.spans),
        condition_dim=len(transform.label_classes) if transform.conditional else 0,
    )
    ensure_ray(config.ray)
    if config.training.use_gpu:
        require_gpus(config.training.num_workers, config.ray.gpu_wait_s, what="training worker")
    datasets = _encoded_datasets(source, transform, config)
    run_key = training_run_key(config, stamp)
    run_name = config.training.run_name or f"run-{run_key[:12]}"
    result = _fit(config, model_config, datasets, run_key, run_name, progress)
    bundle = _bundle_from_checkpoint(result, model_config, transform, config)
    logger.info(
        "model bundle written to %s (fingerprint %s)", storage.redact_url(config.model_url), bundle.fingerprint[:12]
    )
    return bundle


def training_run_key(config: PipelineConfig, stamp: list[dict[str, Any]] | None = None) -> str:
    """What a resumable run must share: the input files, data, model and optimisation settings (epochs may grow,
    workers change); new data never resumes a checkpoint trained on the old."""
    training = config.training.model_dump(
        mode="json",
        exclude={
            "epochs",
            "num_workers",
            "use_gpu",
            "mixed_precision",
            "run_name",
            "keep_best",
            "early_stopping_patience",
        },
    )
    data = config.data.model_dump(mode="json", exclude={"storage_options"})
    payload = {"data": data, "model": config.model.model_dump(mode="json"), "training": training, "input": stamp}
    return hashlib.sha256(storage.canonical_json(payload).encode()).hexdigest()


def training_step_key(config: PipelineConfig, stamp: list[dict[str, Any]]) -> str:
    """Everything that decides the bundle: the input files and the data, model and training settings."""
    training = config.training.model_dump(mode="json", exclude={"num_workers", "run_name"})
    data = config.data.model_dump(mode="json", exclude={"storage_options"})
    model = config.model.model_dump(mode="json")
    return steps.step_key("train", input=stamp, data=data, model=model, training=training)


def _encoded_datasets(source: Any, transform: TableTransform, config: PipelineConfig) -> dict[str, ray.data.Dataset]:
    """Train and validation rows as Ray Datasets of {"x", "c"} arrays, streamed to the workers.

    A table whose encoding fits comfortably in the object store is encoded and split once, up front, and kept
    there: epochs then only read blocks, and no Ray Data task competes with the training workers for CPUs (with
    as many workers as CPUs, a per-epoch filter task would never be scheduled). Larger tables stream every epoch,
    so leave Ray Data some CPUs beside the training workers.
    """
    encoded = read_dataset(source).map_batches(
        EncodeRows,
        fn_constructor_kwargs={"transform_state": transform.state_dict(), "data": config.data.model_dump(mode="json")},
        batch_format="pyarrow",
        batch_size=config.data.batch_rows,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.training.num_workers),
    )
    small = source.count_rows() * transform.output_dim * 4 < _MATERIALIZE_BYTES
    if small:
        encoded = encoded.materialize()
    else:
        _check_streaming_cpus(config)
    datasets = {
        name: encoded.map_batches(select_split, fn_kwargs={"split": split}, batch_format="numpy")  # type: ignore[arg-type]
        for name, split in (("train", Split.TRAIN), ("validation", Split.VALIDATION))
    }
    return {name: dataset.materialize() for name, dataset in datasets.items()} if small else datasets


def _check_streaming_cpus(config: PipelineConfig) -> None:
    """A streamed input needs CPUs beside the training workers, or its read tasks wait forever for one.

    Each training worker holds a CPU for the whole run, the encoding actor pool keeps at least one, and the read and
    split tasks need one more. Only a local instance is checked: a cluster's autoscaler can add the CPUs.
    """
    if config.ray.address:
        return
    needed = config.training.num_workers + 2
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < needed:
        raise ConfigError(
            f"the input is too large to keep in Ray's object store, so training streams it and needs {needed} CPUs "
            f"({config.training.num_workers} training worker(s), one encoding actor, one for reading); the local Ray "
            f"instance has {cpus:g}: set ray.num_cpus: {needed} (logical CPUs, more than the machine's cores is fine) "
            "or lower training.num_workers"
        )


def _fit(
    config: PipelineConfig,
    model_config: MLPVAEConfig,
    datasets: dict[str, Any],
    run_key: str,
    run_name: str,
    progress: Progress = NO_PROGRESS,
) -> ray.train.Result:
    storage_root = _absolute(storage.join_url(config.model_url, "checkpoints"))
    fs, root_path = storage.url_to_fs(storage_root)
    reports = None if is_silent(progress) else EpochReports(progress, config.training.epochs)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "model_config": model_config.to_json(),
            "training": config.training.model_dump(mode="json"),
            "run_key": run_key,
            "reports": None if reports is None else reports.queue,
        },
        scaling_config=ScalingConfig(num_workers=config.training.num_workers, use_gpu=config.training.use_gpu),
        run_config=RunConfig(
            name=run_name,
            storage_path=root_path,
            storage_filesystem=None if storage.is_local(storage_root) else _arrow_fs(fs),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=2),
        ),
        datasets=datasets,
    )
    logger.info(
        "training run %s: %d epochs on %d worker(s)", run_name, config.training.epochs, config.training.num_workers
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        cause = user_error_in(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        if reports is not None:
            reports.close()


def _bundle_from_checkpoint(
    result: ray.train.Result, model_config: MLPVAEConfig, transform: TableTransform, config: PipelineConfig
) -> ModelBundle:
    if result.checkpoint is None:
        raise VaePipelineError("training finished without a checkpoint; check the worker logs above")
    with result.checkpoint.as_directory() as directory:
        model = build_model(model_config)
        model.load_state_dict(load_model_weights(directory, best=config.training.keep_best))
        metrics = read_metrics(directory)
    return save_bundle(config.model_url, model, model_config, transform, config, metrics)


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DDP model, this worker's data shard, a checkpoint per epoch."""
    training = TrainingConfig.model_validate(loop_config["training"])
    _quiet_report_logs()
    torch.manual_seed(training.seed)
    model = ray.train.torch.prepare_model(build_model(MLPVAEConfig.from_json(loop_config["model_config"])))
    optimizer = make_optimizer(model, training)
    device = ray.train.torch.get_device()
    precision = precision_for(device, training.mixed_precision)
    state = _resume_state(model, optimizer, loop_config["run_key"])
    context = ray.train.get_context()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    for epoch in range(state.epoch, training.epochs):
        started = time.perf_counter()
        train_batches = _batches(train_shard, training, epoch, shuffle=True)
        train_metrics = train_one_epoch(model, optimizer, train_batches, training.beta, device, precision=precision)
        val_batches = _batches(val_shard, training, epoch, shuffle=False)
        val_metrics = evaluate(model, val_batches, training.beta, device, precision=precision)
        record = _epoch_record(epoch, train_metrics, val_metrics, time.perf_counter() - started)
        state.epoch, state.metrics = epoch + 1, [*state.metrics, record]
        state.observe(epoch + 1, record["val_loss"], _unwrap(model))
        if context.get_world_rank() == 0:
            logger.warning(
                "epoch %d/%d  train loss %.4f  val loss %.4f  kl %.3f  (%.1fs)",
                epoch + 1,
                training.epochs,
                record["train_loss"],
                record["val_loss"],
                record["train_kl"],
                record["seconds"],
            )
        if context.get_world_rank() == 0:
            tell_driver(loop_config.get("reports"), record)
        _report(model, optimizer, state, record, context.get_world_rank())
        if _patience_exhausted(state, training):  # every rank sees the same reduced metrics, so all stop together
            if context.get_world_rank() == 0:
                logger.warning("early stop: no better validation loss since epoch %s", state.best_epoch)
            break


def _patience_exhausted(state: TrainingState, training: TrainingConfig) -> bool:
    patience = training.early_stopping_patience
    return patience is not None and state.best_epoch is not None and state.epoch - state.best_epoch >= patience


def _quiet_report_logs() -> None:
    """Ray Train logs every report at INFO under a file-path logger name; those lines drown the epoch lines."""
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # a Ray version that moved it: the lines stay, nothing breaks
        pass


def _resume_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_key: str) -> TrainingState:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainingState(epoch=0, run_key=run_key)
    with checkpoint.as_directory() as directory:
        state = load_training_state(directory, _unwrap(model), optimizer, run_key)
    logger.warning("resuming from the checkpoint after epoch %d", state.epoch)
    return state


def _batches(shard: Any, training: TrainingConfig, epoch: int, *, shuffle: bool) -> Any:
    batches = shard.iter_torch_batches(
        batch_size=training.batch_size,
        dtypes=torch.float32,
        local_shuffle_buffer_size=training.batch_size * 8 if shuffle else None,
        local_shuffle_seed=training.seed * 1_000_003 + epoch if shuffle else None,
    )
    for batch in batches:
        yield batch["x"], batch.get("c")


def _epoch_record(epoch: int, train: Mapping[str, Any], val: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    record: dict[str, Any] = {"epoch": epoch + 1, "seconds": round(seconds, 4)}
    for prefix, values in (("train", train), ("val", val)):
        for name, value in _all_reduce_mean(values).items():
            record[f"{prefix}_{name}"] = value
    return record


def _all_reduce_mean(values: Mapping[str, Any]) -> dict[str, Any]:
    """Average scalar and list metrics over workers; equal data shards make the plain mean the right one."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return {k: (list(map(float, v)) if isinstance(v, list | tuple) else float(v)) for k, v in values.items()}
    reduced: dict[str, Any] = {}
    for name, value in values.items():
        tensor = torch.as_tensor(value, dtype=torch.float64)
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
        reduced[name] = tensor.tolist()
    return reduced


def _report(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState, record: dict[str, Any], rank: int
) -> None:
    metrics = {k: v for k, v in record.items() if not isinstance(v, list)}
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_training_state(directory, _unwrap(model), optimizer, state)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def _unwrap(model: torch.nn.Module) -> MLPVAE:
    inner = model.module if hasattr(model, "module") else model
    assert isinstance(inner, MLPVAE)
    return inner


def _absolute(url: str) -> str:
    return os.path.abspath(url) if "://" not in url else url


def _arrow_fs(fs: Any) -> Any:
    import pyarrow.fs as pa_fs

    return pa_fs.PyFileSystem(pa_fs.FSSpecHandler(fs))
