"""Who is reading: this process's rank in distributed training and its DataLoader worker.

A consumer is one (rank, DataLoader worker) pair. The rank is resolved where the dataset is built, in the training
process, because a DataLoader worker started with `spawn` has no process group and no Ray Train context of its own
(`torch.utils.data.DistributedSampler` resolves its rank at construction for the same reason). The worker is
resolved inside the worker, when iteration starts.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import torch.distributed as dist
from torch.utils.data import get_worker_info

from vae_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consumer:
    """One reader of the dataset: a rank of `world_size`, and a DataLoader worker of `num_workers` in that rank."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        """Position among all consumers: rank * num_workers + worker."""
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        """How many consumers share the dataset: world_size * num_workers."""
        return self.world_size * self.num_workers


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): as given, else from `torch.distributed`, else from Ray Train, else (0, 1).

    Raises:
        ConfigError: only one of rank and world_size was given, or rank is not in [0, world_size).
    """
    if rank is not None or world_size is not None:
        return _checked(rank, world_size)
    if dist.is_available() and dist.is_initialized():
        logger.debug("rank from torch.distributed")
        return dist.get_rank(), dist.get_world_size()
    detected = _ray_train_rank()
    if detected is not None:
        logger.debug("rank from the Ray Train context")
        return detected
    return 0, 1


def current_worker(rank: int, world_size: int) -> Consumer:
    """The consumer this process is: the given rank, and the DataLoader worker when called inside one."""
    info = get_worker_info()
    if info is None:
        return Consumer(rank, world_size)
    return Consumer(rank, world_size, info.id, info.num_workers)


def _checked(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        raise ConfigError(
            f"got rank={rank} and world_size={world_size}; give both, or neither to detect them from "
            "torch.distributed or Ray Train"
        )
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, world_size={world_size}); give 0 <= rank < world_size")
    return rank, world_size


def _ray_train_rank() -> tuple[int, int] | None:
    """The Ray Train worker's (world rank, world size), or None outside a Ray Train worker or without Ray.

    A Ray Train worker has imported `ray.train` before it runs the user's function, so a process that has not is
    not one, and plain torch users never pay for importing Ray here.
    """
    if "ray.train" not in sys.modules:
        return None
    try:
        import ray.train

        context = ray.train.get_context()
        return context.get_world_rank(), context.get_world_size()
    except (ImportError, RuntimeError, DeprecationWarning):  # outside a training function; inside Ray Tune
        return None
