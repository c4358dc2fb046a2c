"""Where a step runs: in this process (`local`) or on Ray (`ray`), chosen in one place for every step.

The same code runs either way (Ray's preprocessors do the same: `transform_batch` in-process on small data,
`map_batches` at scale). Ray earns its start-up, its actors and its object store when a step needs several worker
processes, a cluster, or more data than one process holds; a table of a few thousand rows on a laptop needs none of
that, and paid tens of seconds of fixed cost for it. `auto` picks `local` for a step whose work fits one process on
this machine, and `ray` otherwise; an explicit `local` that cannot work is refused with the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from vae_pipeline.config import ExecutorSetting, PipelineConfig, RayConfig
from vae_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

Executor = Literal["local", "ray"]

# A Ray Job's driver finds its cluster through this variable: a step running as a Ray Job stays on the cluster.
RAY_ADDRESS_VAR = "RAY_ADDRESS"
# The most memory the in-process path may hold for a step's data (encoded training rows), as a share of this
# machine's memory; beyond it the step streams through Ray Data instead.
LOCAL_MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class Workload:
    """What a step needs, as far as choosing where it runs goes."""

    step: str  # "training", "statistics", "generation": the config section whose `executor` is being resolved
    workers: int  # worker processes asked for (`<section>.num_workers`, or fewer when there is less work)
    memory_bytes: int = 0  # what the in-process path would hold in memory at once
    use_gpu: bool = False


def choose_executor(setting: ExecutorSetting, ray: RayConfig, work: Workload) -> Executor:
    """`local` or `ray` for one step, logged with the reason; an impossible `local` is a one-line ConfigError."""
    obstacle = _local_obstacle(ray, work)
    if setting == "local" and obstacle is not None:
        raise ConfigError(f"{work.step}.executor is local, but {obstacle[0]}; {obstacle[1]}")
    chosen: Executor = "ray" if setting == "ray" or (setting == "auto" and obstacle is not None) else "local"
    reason = "asked for" if setting != "auto" else (obstacle[0] if obstacle is not None else "one process suffices")
    logger.info("%s runs %s (%s.executor=%s: %s)", work.step, _where(chosen), work.step, setting, reason)
    return chosen


def check_local_settings(config: PipelineConfig) -> None:
    """Refuse, before any step runs, a step set to `local` whose settings alone rule it out (workers, a cluster).

    What depends on the data (its size in memory) is checked when the step runs.
    """
    sections: dict[str, Any] = {
        "training": config.training,
        "statistics": config.statistics,
        "generation": config.generation,
    }
    for step, section in sections.items():
        if section.executor == "local":
            use_gpu = bool(getattr(section, "use_gpu", False)) or (step == "statistics" and section.priors.needs_gpu)
            # Only the refusal: the choice itself is logged when the step runs, inside the run's log file.
            obstacle = _local_obstacle(config.ray, Workload(step, _least_workers(step, section), use_gpu=use_gpu))
            if obstacle is not None:
                raise ConfigError(f"{step}.executor is local, but {obstacle[0]}; {obstacle[1]}")


def _least_workers(step: str, section: Any) -> int:
    """Generation may need fewer workers than asked for (one shard keeps one busy); the other steps use them all."""
    if step == "generation":
        return min(section.num_workers, -(-section.rows // section.rows_per_shard))
    return int(section.num_workers)


def _where(executor: Executor) -> str:
    return "in this process" if executor == "local" else "on Ray"


def _local_obstacle(ray: RayConfig, work: Workload) -> tuple[str, str] | None:
    """Why the step cannot run in this process, and what to do instead; None when it can."""
    if ray.address:
        return f"ray.address is set ({ray.address!r})", f"a cluster run uses Ray: set {work.step}.executor: ray"
    if os.environ.get(RAY_ADDRESS_VAR):
        return "this process is a Ray Job's driver (RAY_ADDRESS is set)", f"set {work.step}.executor: ray"
    if work.workers > 1:
        return (
            f"{work.step}.num_workers is {work.workers} (the local executor runs one process)",
            f"set {work.step}.num_workers: 1 or {work.step}.executor: ray",
        )
    if work.use_gpu and not _cuda_available():
        return "use_gpu is set and this process sees no GPU", f"set {work.step}.executor: ray to use a cluster's GPUs"
    limit = local_memory_limit()
    if work.memory_bytes > limit:
        return (
            f"its data takes about {work.memory_bytes / 2**30:.1f} GiB in memory, more than the local executor "
            f"holds ({limit / 2**30:.1f} GiB, {LOCAL_MEMORY_SHARE:.0%} of this machine's memory)",
            f"set {work.step}.executor: ray, which streams it",
        )
    return None


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch and BLAS on one thread while a step runs in this process, then as they were.

    A Ray worker that holds one CPU runs single-threaded (Ray sets OMP_NUM_THREADS=1 for it), and so does the local
    executor: for the models and batches of this pipeline a second thread gains little on an idle machine, and on a
    busy one threads spin against each other (an epoch measured 20x slower with two threads under load).
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def local_memory_limit() -> int:
    """The bytes a step's in-process data may take: a share of this machine's physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a platform without sysconf: assume a small machine
        total = 8 * 2**30
    return int(total * LOCAL_MEMORY_SHARE)


def _cuda_available() -> bool:
    import torch  # only asked when a GPU is wanted; torch is loaded by then anyway

    return bool(torch.cuda.is_available())
