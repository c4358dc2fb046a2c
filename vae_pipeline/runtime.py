"""The Ray edge: one Ray instance per process, started on first use (never at import), and Ray Data readers.

`ray.address` empty starts a local instance; otherwise it connects to the given cluster (`auto`, `host:port`,
or `ray://host:port` for Ray Client).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import ray
import ray.data
from ray.exceptions import RayError

from vae_pipeline.config import RayConfig
from vae_pipeline.data import CSV_NULL_VALUES, TableSource
from vae_pipeline.errors import ConfigError, VaePipelineError

logger = logging.getLogger(__name__)

# Inherited by every Ray process this driver starts. The Train controller polls workers for reports at this
# interval, and a worker's next report waits for the previous one to be taken: the 2 s default would add up to
# 2 s to every short epoch.
CONNECT_TIMEOUT_S = 30.0
_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def ensure_ray(config: RayConfig) -> None:
    """Start or connect to Ray once per process; later calls reuse the same instance."""
    if ray.is_initialized():
        return
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if config.address:
        _check_reachable(config.address)
        kwargs["address"] = config.address
    elif config.num_cpus:
        kwargs["num_cpus"] = config.num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {config.address!r}: {exc}; check ray.address and `ray status`"
        ) from exc
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    logger.info("ray ready: %s", ray.cluster_resources())


def _check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A GCS `host:port` that does not answer makes `ray.init` wait for minutes; fail within a bounded time instead.

    `auto` and `ray://` addresses are left to Ray, which fails fast on them; `http://` addresses are for Ray Jobs.
    """
    if address == "auto" or "://" in address:
        if address.startswith(("http://", "https://")):
            raise ConfigError(
                f"ray.address {address!r} is a dashboard address: it submits the flow's steps as Ray Jobs, and a "
                "single step connects with `auto` (inside the cluster), HOST:6379 or ray://HOST:10001"
            )
        return
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return
        except (OSError, ValueError) as exc:
            if time.monotonic() >= deadline or isinstance(exc, ValueError):
                raise ConfigError(
                    f"cannot reach the Ray cluster at {address!r} within {timeout_s:.0f}s ({exc}); is the head "
                    f"running? check with `ray status --address {address}`, and that ray.address is HOST:PORT of "
                    "its GCS (6379 by default)"
                ) from exc
            time.sleep(1)


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def read_dataset(source: TableSource) -> ray.data.Dataset:
    """The source's files as a Ray Dataset, streamed block by block, only the pipeline's columns."""
    files = list(source.files)
    filesystem = source.arrow_filesystem()
    if source.format == "csv":
        import pyarrow.csv as pa_csv

        convert = pa_csv.ConvertOptions(
            null_values=CSV_NULL_VALUES,
            strings_can_be_null=True,
            include_columns=source.columns,
            column_types=source.schema,
        )
        return ray.data.read_csv(files, filesystem=filesystem, convert_options=convert)
    return ray.data.read_parquet(files, filesystem=filesystem, columns=source.columns)


def user_error_in(exc: BaseException) -> VaePipelineError | None:
    """Find one of our own errors inside Ray's wrapping, so the user sees its one-line message, not a traceback."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # Ray re-raises task errors as a class deriving from both RayError and the cause's class: look inside.
        if isinstance(current, VaePipelineError) and not isinstance(current, RayError):
            return current
        inner = [getattr(current, name, None) for name in ("cause", "__cause__", "__context__")]
        inner += list(getattr(current, "worker_failures", {}).values())
        stack.extend(item for item in inner if isinstance(item, BaseException))
    return None
