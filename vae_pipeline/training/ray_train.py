"""Training on Ray Train: Ray Data encodes the rows and a `TorchTrainer` runs the shared epoch loop on DDP workers.

`training/job.py` calls `fit_on_ray` when the executor is `ray` (a cluster, several workers, a GPU pool, or an
input larger than one process holds). Each worker runs `train_loop`, which is `epochs.run_epochs` on its data shard
with a DDP model; when a checkpoint is due (`epochs.CheckpointSchedule`) rank 0 writes it to the run's
`CheckpointStore`, from which a restarted worker group, a rerun with the same run name, or the in-process executor
resumes, and from which the driver takes the final weights. Rank 0 also tells the driver each epoch's losses as
it finishes it (`epoch_reports.py`), so a progress bar moves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from vae_pipeline import storage
from vae_pipeline.config import PipelineConfig, TrainingConfig
from vae_pipeline.data import TableSource
from vae_pipeline.errors import ConfigError
from vae_pipeline.models.base import ModelShape
from vae_pipeline.models.registry import build, shape_from_json
from vae_pipeline.progress import NO_PROGRESS, Progress, is_silent
from vae_pipeline.resources import require_gpus
from vae_pipeline.runtime import ensure_ray, read_dataset, user_errors_raised
from vae_pipeline.split import Split
from vae_pipeline.training.checkpoint import (
    CheckpointStore,
    TrainingState,
    checkpoint_url,
)
from vae_pipeline.training.epoch_reports import EpochReports, tell_driver
from vae_pipeline.training.epochs import SingleProcess, SplitName, TrainedModel, run_epochs, unwrap
from vae_pipeline.training.loop import Batch, make_optimizer, precision_for
from vae_pipeline.training.prepare import EncodeRows, select_split
from vae_pipeline.transforms.table import TableTransform

logger = logging.getLogger(__name__)

# Below this many encoded bytes the dataset is materialised once in the object store instead of re-read per epoch.
_MATERIALIZE_BYTES = 512 * 1024**2


def fit_on_ray(
    config: PipelineConfig,
    model_config: ModelShape,
    transform: TableTransform,
    source: TableSource,
    run_key: str,
    run_name: str,
    progress: Progress = NO_PROGRESS,
) -> TrainedModel:
    """Encode with Ray Data and train on `training.num_workers` Ray Train workers; the weights and metrics."""
    ensure_ray(config.ray)
    if config.training.use_gpu:
        require_gpus(config.training.num_workers, config.ray.gpu_wait_s, what="training worker")
    datasets = _encoded_datasets(source, transform, config)
    _fit(config, model_config, datasets, run_key, run_name, progress)
    # Rank 0 committed the last epoch to the run's checkpoint store before the workers finished.
    store = CheckpointStore(checkpoint_url(config.model_url, run_name))
    weights, metrics = store.final(best=config.training.keep_best)
    return TrainedModel(weights, metrics)


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
    model_config: ModelShape,
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
            "checkpoint_url": _absolute(checkpoint_url(config.model_url, run_name)),
            "reports": None if reports is None else reports.queue,
        },
        scaling_config=ScalingConfig(num_workers=config.training.num_workers, use_gpu=config.training.use_gpu),
        run_config=RunConfig(
            name=run_name,
            storage_path=root_path,
            storage_filesystem=None if storage.is_local(storage_root) else _arrow_fs(fs),
            failure_config=FailureConfig(max_failures=2),
        ),
        datasets=datasets,
    )
    logger.info(
        "training run %s: %d epochs on %d worker(s)", run_name, config.training.epochs, config.training.num_workers
    )
    try:
        with user_errors_raised(ray.train.TrainingFailedError):
            return trainer.fit()
    finally:
        if reports is not None:
            reports.close()


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the shared epoch loop on a DDP model and this worker's data shard."""
    training = TrainingConfig.model_validate(loop_config["training"])
    _quiet_report_logs()
    torch.manual_seed(training.seed)
    model = ray.train.torch.prepare_model(build(shape_from_json(loop_config["model_config"])))
    optimizer = make_optimizer(model, training)
    device = ray.train.torch.get_device()
    store = CheckpointStore(loop_config["checkpoint_url"])
    state = store.resume(unwrap(model), optimizer, loop_config["run_key"]) or TrainingState(0, loop_config["run_key"])
    rank = ray.train.get_context().get_world_rank()
    shards = {split: ray.train.get_dataset_shard(split) for split in ("train", "validation")}

    def batches(split: SplitName, epoch: int) -> Iterator[Batch]:
        return _batches(shards[split], training, epoch, shuffle=split == "train")

    def on_epoch(state: TrainingState, record: dict[str, Any], checkpoint: bool) -> None:
        if rank == 0:
            logger.warning(
                "epoch %d/%d  train loss %.4f  val loss %.4f  kl %.3f  (%.1fs)", record["epoch"], training.epochs,
                record["train_loss"], record["val_loss"], record["train_kl"], record["seconds"],
            )  # fmt: skip
            tell_driver(loop_config.get("reports"), record)
        if checkpoint and rank == 0:  # a restarted worker group resumes from the store (train_loop's first lines)
            store.save(unwrap(model), optimizer, state)

    precision = precision_for(device, training.mixed_precision)
    collective = DistributedCollective()
    run_epochs(model, optimizer, state, training, batches, device, on_epoch, collective=collective, precision=precision)


class DistributedCollective:
    """The workers of a DDP run: metrics averaged with all-reduce (equal shards make the plain mean right)."""

    def mean(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if not _distributed():
            return SingleProcess().mean(values)
        reduced: dict[str, Any] = {}
        for name, value in values.items():
            tensor = torch.as_tensor(value, dtype=torch.float64)
            dist.all_reduce(tensor)
            tensor /= dist.get_world_size()
            reduced[name] = tensor.tolist()
        return reduced


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _quiet_report_logs() -> None:
    """Ray Train logs every report at INFO under a file-path logger name; those lines drown the epoch lines."""
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # a Ray version that moved it: the lines stay, nothing breaks
        pass


def _batches(shard: Any, training: TrainingConfig, epoch: int, *, shuffle: bool) -> Iterator[Batch]:
    batch_size = training.batch_size or 500  # job.py resolves a null size before training starts
    batches = shard.iter_torch_batches(
        batch_size=batch_size,
        dtypes=torch.float32,
        local_shuffle_buffer_size=batch_size * 8 if shuffle else None,
        local_shuffle_seed=training.seed * 1_000_003 + epoch if shuffle else None,
    )
    for batch in batches:
        yield batch["x"], batch.get("c")


def _absolute(url: str) -> str:
    return os.path.abspath(url) if "://" not in url else url


def _arrow_fs(fs: Any) -> Any:
    import pyarrow.fs as pa_fs

    return pa_fs.PyFileSystem(pa_fs.FSSpecHandler(fs))
