"""The Ray edge: one Ray instance per process, started on first use (never at import), and Ray Data readers.

`ray.address` empty starts a local instance; otherwise it connects to the given cluster (`auto`, `host:port`,
or `ray://host:port` for Ray Client). Through Ray Client, the work that drives Ray Data and Ray Train runs in a
task on the head node (`run_as_driver`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import ray
import ray.data
import ray.util.client
from ray.exceptions import RayError

from vae_pipeline.config import RayConfig
from vae_pipeline.data import CSV_NULL_VALUES, TableSource
from vae_pipeline.errors import ConfigError, VaePipelineError

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 30.0
CLIENT_CONNECT_ATTEMPTS = 3
CLIENT_SCHEME = "ray://"
DEFAULT_CLIENT_PORT = 10001  # `ray start --head` serves Ray Client here unless --ray-client-server-port says otherwise
# Inherited by every Ray process this driver starts (through Ray Client, by the job's runtime_env: the cluster's
# processes do not inherit this one's environment). The Train controller polls workers for reports at this
# interval, and a worker's next report waits for the previous one to be taken: the 2 s default would add up to
# 2 s to every short epoch.
_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
# A custom resource Ray gives the head node alone: a step's driver task asks for a sliver of it, so it runs beside
# the Ray Client server and never on a worker node that an autoscaler may take away (a 0-CPU task keeps no node busy).
_HEAD_NODE = {"node:__internal_head__": 0.001}
# Ray reads the GCS port of a head node it starts from GCS_PORT_VAR (ray_constants.GCS_PORT_ENVIRONMENT_VARIABLE).
RAY_ADDRESS_VAR, GCS_PORT_VAR = "RAY_ADDRESS", "RAY_GCS_SERVER_PORT"


def ensure_ray(config: RayConfig) -> None:
    """Start or connect to Ray once per process; later calls reuse the same instance."""
    if ray.is_initialized():
        return
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if is_client_address(config.address):
        _check_client_reachable(config.address)
        kwargs["address"] = config.address
        kwargs["runtime_env"] = {"env_vars": {key: os.environ[key] for key in _RAY_ENV}}
    elif config.address:
        _check_reachable(config.address)
        kwargs["address"] = config.address
    elif config.num_cpus:
        kwargs["num_cpus"] = config.num_cpus
    local = not config.address and not os.environ.get(RAY_ADDRESS_VAR)  # RAY_ADDRESS: a Ray Job's driver connects
    if local:
        kwargs["address"] = "local"  # a new instance, even while the pinned RAY_ADDRESS below is set
    try:
        with _own_address_exported() if local else nullcontext():
            _init(kwargs, attempts=CLIENT_CONNECT_ATTEMPTS if is_client_address(config.address) else 1)
    except ConnectionError as exc:
        raise ConfigError(_connection_error(config.address, exc)) from exc
    _configure_ray_data()
    logger.info("ray ready: %s", ray.cluster_resources())


@contextmanager
def _own_address_exported() -> Iterator[None]:
    """Start a local instance on a GCS port chosen here, with its own address in its processes' environment.

    Ray code that finds the cluster by itself (the state API, which Ray Train V2's PlacementGroupCleaner asks
    whether the Train controller is alive) reads RAY_ADDRESS, else scans the machine for GCS processes: with two
    pipelines running it fails with "Found multiple active Ray instances", and where `ray start` left
    /tmp/ray/ray_current_cluster behind it asks that other cluster, which does not know the controller. Ray takes
    the head's GCS port from RAY_GCS_SERVER_PORT, and the raylet hands its environment to every worker, so each
    worker of this instance points at its own GCS. The driver's environment is restored afterwards, so a process it
    starts (another `vae-pipeline`) still starts an instance of its own.
    """
    port = _unused_port()
    pinned = {GCS_PORT_VAR: str(port), RAY_ADDRESS_VAR: f"127.0.0.1:{port}"}
    saved = {key: os.environ.get(key) for key in pinned}
    os.environ.update(pinned)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _unused_port() -> int:
    """A TCP port free at this moment (Ray picks its own ports the same way)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _init(kwargs: dict[str, Any], attempts: int) -> None:
    """`ray.init`, connecting again when the head fails to start a Ray Client session (a ConnectionAbortedError).

    The head's Ray Client proxy starts one server process per connection, forking from its multi-threaded gRPC
    server, and now and then that process dies at once ("Starting Ray client server failed"); a new connection
    gets a new one. Nothing has run yet, so connecting again is safe.
    """
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                # Ray Client warns (several lines on stderr) before it raises the ConnectionError reported above.
                warnings.filterwarnings("ignore", message="Ray Client connection timed out")
                ray.init(**kwargs)
            return
        except ConnectionAbortedError as exc:
            if attempt == attempts or "Initialization failure from server" not in str(exc):
                raise
            logger.warning("Ray Client: %s; connecting again (%d/%d)", _last_line(exc), attempt + 1, attempts)
            time.sleep(1)


def is_client_address(address: str) -> bool:
    """A Ray Client address, `ray://HOST:PORT`."""
    return address.startswith(CLIENT_SCHEME)


def _configure_ray_data() -> None:
    """Ray Data settings of this process (the driver's, or a driver task's on the cluster)."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False


def _connection_error(address: str, exc: ConnectionError) -> str:
    """One line: Ray's messages may carry the server's traceback."""
    reason = _last_line(exc)
    if is_client_address(address) and isinstance(exc, ConnectionAbortedError):
        return (
            f"the Ray Client server at {address!r} could not start a session for this process ({reason}); see "
            "ray_client_server*.err in the head's Ray logs (/tmp/ray/session_latest/logs by default)"
        )
    if is_client_address(address):
        port = _client_host_port(address)[1]
        return (
            f"cannot connect to a Ray Client server at {address!r} ({reason}): the port answers but no Ray Client "
            f"server does; check that {port} is the head's Ray Client port (10001 unless `ray start --head "
            "--ray-client-server-port` says otherwise), not its GCS port (6379) or its dashboard's (8265)"
        )
    return f"cannot reach the Ray cluster at {address!r}: {reason}; check ray.address and `ray status`"


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an error's message: a server traceback's own error, or the whole message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_as_driver(config: RayConfig, fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)`, a step's work that drives Ray Data or Ray Train: here, or on the cluster through Ray Client.

    A Ray Client process is no Ray worker: Ray Data's executor needs the driver's core worker (it fails with
    "'Worker' object has no attribute 'core_worker'"; Ray Data does not support Ray Client, ray-project/ray#48682)
    and Ray Train V2 has no Ray Client mode. So with a `ray://` address `fn` runs in a task on the head node, as
    Ray Tune runs its controller under Ray Client, and its result or its one-line error comes back here. Its URLs
    are then opened on the cluster: local paths must be absolute and on storage the cluster shares. Otherwise `fn`
    runs in this process and starts Ray itself when it needs it, so bad input still fails before Ray starts.
    """
    if is_client_address(config.address):
        ensure_ray(config)
    if not ray.util.client.ray.is_connected():
        return fn(*args)
    name = f"vae-pipeline:{getattr(fn, '__qualname__', 'step')}"
    task = ray.remote(_drive).options(num_cpus=0, resources=_HEAD_NODE, max_retries=0, name=name)
    logger.info("Ray Client: running %s in a task on the cluster's head node", name)
    with user_errors_raised(RayError):
        result: T = ray.get(task.remote(fn, logging.getLogger().getEffectiveLevel(), *args))
    return result


def _drive(fn: Callable[..., T], log_level: int, *args: Any) -> T:
    """The driver task: this process's Ray Data settings and the client's log level, then the step's work."""
    _configure_ray_data()
    library = logging.getLogger("vae_pipeline")
    library.setLevel(log_level)
    if not library.handlers:  # Ray streams the task's stderr to the client, prefixed with the task's name
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        library.addHandler(handler)
        library.propagate = False
    return fn(*args)


def _check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A GCS `host:port` that does not answer makes `ray.init` wait for minutes; fail within a bounded time instead.

    `auto` is left to Ray, which fails fast on it; `ray://` addresses are checked by `_check_client_reachable`;
    `http://` addresses are for Ray Jobs.
    """
    if address == "auto" or "://" in address:
        if address.startswith(("http://", "https://")):
            raise ConfigError(
                f"ray.address {address!r} is a dashboard address: it submits the flow's steps as Ray Jobs, and a "
                "single step connects with `auto` (inside the cluster), HOST:6379 or ray://HOST:10001"
            )
        return
    host, _, port = address.rpartition(":")
    problem = _unanswered(host or "127.0.0.1", port, timeout_s)
    if problem is not None:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} within {timeout_s:.0f}s ({problem}); is the head "
            f"running? check with `ray status --address {address}`, and that ray.address is HOST:PORT of "
            "its GCS (6379 by default)"
        ) from problem


def _check_client_reachable(address: str, timeout_s: float | None = None) -> None:
    """A Ray Client port that does not answer makes `ray.init` retry for 30 s and warn over several lines; fail
    with one line instead, after waiting up to `timeout_s` (default `CONNECT_TIMEOUT_S`) for a head starting up."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    host, port = _client_host_port(address)
    problem = _unanswered(host, port, timeout_s)
    if problem is not None:
        raise ConfigError(
            f"cannot reach the Ray Client server at {address!r} within {timeout_s:.0f}s ({problem}); is the head "
            f"running and serving Ray Client on port {port} (`ray start --head` does on 10001 unless told "
            f"--ray-client-server-port; KubeRay's head service calls it `client`)? check with `nc -vz {host} {port}` "
            "from this machine and `ray status` on the head"
        ) from problem


def _client_host_port(address: str) -> tuple[str, str]:
    """HOST and PORT of `ray://HOST[:PORT]`, PORT defaulting to Ray Client's 10001 as Ray's own parsing does."""
    netloc = address.removeprefix(CLIENT_SCHEME).split("/", 1)[0]
    host, sep, port = netloc.rpartition(":")
    if not sep:
        return netloc or "127.0.0.1", str(DEFAULT_CLIENT_PORT)
    return host or "127.0.0.1", port


def _unanswered(host: str, port: str, timeout_s: float) -> Exception | None:
    """None once `host:port` accepts a TCP connection; the last error if it has not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return None
        except (OSError, ValueError) as exc:
            if time.monotonic() >= deadline or isinstance(exc, ValueError):
                return exc
            time.sleep(1)


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def read_dataset(source: TableSource) -> ray.data.Dataset:
    """The source's files as a Ray Dataset, streamed block by block, only the pipeline's columns.

    Its batches carry the same types as `source.batches()`: image columns stored in another layout go through the
    source's `ImageConversion`. Ray Data keeps a canonical fixed-shape tensor column as it is (Ray 2.60 reads it
    back as `pyarrow.FixedShapeTensorType`), so those need no conversion.
    """
    if source.format == "npz":  # read whole and held in memory by the source already (a small file)
        return ray.data.from_arrow(source.dataset.to_table(columns=source.columns))
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
    dataset = ray.data.read_parquet(files, filesystem=filesystem, columns=source.columns)
    if source.images.columns:
        dataset = dataset.map_batches(source.images.convert, batch_format="pyarrow")
    return dataset


@contextmanager
def user_errors_raised(*kinds: type[BaseException]) -> Iterator[None]:
    """Let an error of `kinds` (Ray's wrappers) through as the error of ours it carries (`user_error_in`), if any."""
    try:
        yield
    except kinds as exc:
        cause = user_error_in(exc)
        if cause is not None:
            raise cause from None
        raise


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
