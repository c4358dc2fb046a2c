"""A local multi-process Ray cluster for tests: a head node plus one worker node, on 127.0.0.1 only.

Each node is a `ray start --block` process that this module starts in its own session, so the fixture owns
exactly the process groups it kills at teardown; `ray stop` is never used (it would stop every Ray instance on
the machine, other test sessions' included). Every port that Ray would otherwise take from a fixed default
(GCS 6379, dashboard 8265, client server 10001, dashboard agent 52365) is a free one picked here, and the
cluster has its own short temp dir (Unix socket paths are limited to ~107 characters), so it never collides
with a `ray.init()` instance in the test process or with another engineer's cluster.

The job entrypoints run in the nodes' environment: PATH starts with this interpreter's bin directory, so
`python` and `vae-pipeline` inside a Ray Job are the virtualenv's.

Usage: import the fixture function into a test module or a conftest
(`from tests.integration.ray_cluster import local_ray_cluster_fixture  # noqa: F401`), then ask for
`local_ray_cluster` like any fixture. It is session-scoped: one cluster serves every test that asks for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 180.0
# Ray swaps 127.0.0.1 (and "localhost") for the machine's routable IP when it names a node, so nodes take other
# loopback addresses: the head 127.0.0.2, worker node i 127.0.0.(2 + i). The dashboard listens on 127.0.0.1.
HEAD_IP = "127.0.0.2"
# Variables that would point the nodes at another cluster or another token.
_FOREIGN_RAY_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
STOP_GRACE_S = 15.0
MARKER_ENV = "VAE_PIPELINE_TEST_RAY_CLUSTER"
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # per node; the default (30% of RAM) is far too much for tests


@dataclass
class LocalRayCluster:
    """A running local cluster: connect with `gcs_address` (ray.init), `client_address` (Ray Client, `ray://`) or
    `dashboard_url` (Ray Jobs)."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str
    client_address: str = ""
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def alive_nodes(self) -> int:
        """Nodes the dashboard reports alive (0 while it does not answer)."""
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/nodes?view=summary", timeout=5) as response:
                summary = json.load(response)["data"]["summary"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(1 for node in summary if node.get("raylet", {}).get("state") == "ALIVE")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the nodes' `ray start` output, for failure messages."""
        parts = []
        for index in range(len(self.nodes)):
            path = Path(self.temp_dir) / f"node-{index}.out"
            if path.exists():
                parts.append(f"--- node {index} ---\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(parts)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_environment(temp_dir: str, dashboard_url: str) -> dict[str, str]:
    """This process's environment, minus anything that points Ray elsewhere, with the venv first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN_RAY_ENV)}
    # Ray's state API (Ray Train's placement-group cleaner uses it) looks for "the" local cluster when given no
    # address, and fails on a machine that runs several: name ours.
    env["RAY_API_SERVER_ADDRESS"] = dashboard_url
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env[MARKER_ENV] = temp_dir  # inherited by every process of the cluster: how teardown finds them
    # Loopback, no token: nothing outside this machine can reach the cluster, so no auth token is needed, and
    # clients (the test process, job drivers) need no RAY_AUTH_* set-up.
    env["RAY_AUTH_MODE"] = "disabled"
    # A worker node gives up if its raylet has not registered within 30 s, which a busy 2-core machine exceeds.
    env["RAY_raylet_start_wait_time_s"] = str(int(STARTUP_TIMEOUT_S))
    return env


def _ray_start(args: list[str], temp_dir: str, dashboard_url: str, index: int) -> subprocess.Popen[bytes]:
    ray = str(Path(sys.executable).parent / "ray")
    common = [
        "--num-cpus=1",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--min-worker-port=0",  # 0/0: workers bind random ports, not the shared 10002-19999 range
        "--max-worker-port=0",
        "--disable-usage-stats",
        "--block",
    ]
    with open(Path(temp_dir) / f"node-{index}.out", "wb") as out:
        # Own session: the node's processes form a process group that only this fixture signals.
        return subprocess.Popen(
            [ray, "start", *args, *common],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=node_environment(temp_dir, dashboard_url),
            start_new_session=True,
        )


def start_cluster(worker_nodes: int = 1) -> LocalRayCluster:
    """Start a head and `worker_nodes` workers; return once the dashboard reports them all alive."""
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")
    gcs_port, dashboard_port, client_port = free_port(), free_port(), free_port()
    # The Ray Client server listens on the head's node IP (and on 127.0.0.1 too, as a non-localhost node IP).
    client_address = f"ray://{HEAD_IP}:{client_port}"
    cluster = LocalRayCluster(f"{HEAD_IP}:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", temp_dir, client_address)
    try:
        head = [
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={client_port}",
            f"--temp-dir={temp_dir}",
        ]
        cluster.nodes.append(_ray_start(head, temp_dir, cluster.dashboard_url, 0))
        _wait_for(cluster, lambda: cluster.alive_nodes() >= 1, "the head node")
        for index in range(1, worker_nodes + 1):
            worker = [
                f"--address={cluster.gcs_address}",
                f"--node-ip-address=127.0.0.{2 + index}",
                f"--temp-dir={temp_dir}",
            ]
            cluster.nodes.append(_ray_start(worker, temp_dir, cluster.dashboard_url, index))
        _wait_for(cluster, lambda: cluster.alive_nodes() >= 1 + worker_nodes, f"{worker_nodes} worker node(s)")
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _wait_for(cluster: LocalRayCluster, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        exited = [node.args for node in cluster.nodes if node.poll() is not None]
        if exited or time.monotonic() > deadline:
            reason = "a `ray start` exited" if exited else f"not up after {STARTUP_TIMEOUT_S:.0f}s"
            raise RuntimeError(f"local Ray cluster: {what} failed ({reason})\n{cluster.log_tail()}")
        time.sleep(0.5)


def stop_cluster(cluster: LocalRayCluster) -> None:
    """Stop the nodes (worker nodes first), kill whatever is left, then remove the temp dir.

    `ray start --block` shuts its node down cleanly on SIGINT (Ctrl-C) and ignores SIGTERM while it blocks;
    Ray's own processes block SIGINT, so it goes to the `ray start` process alone. What outlives the grace
    period is SIGKILLed: first each node's process group, then, by pid, the processes that left the groups
    (workers, job drivers in their own sessions), found by the marker every process of the cluster inherits.
    """
    for node in reversed(cluster.nodes):
        with contextlib.suppress(ProcessLookupError):
            node.send_signal(signal.SIGINT)
    _wait_until(lambda: all(node.poll() is not None for node in cluster.nodes), STOP_GRACE_S)
    for node in cluster.nodes:
        _signal_group(node, signal.SIGKILL)  # the group outlives its leader: kill what is still in it
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=STOP_GRACE_S)
    _wait_until(lambda: not leftover_processes(cluster.temp_dir), STOP_GRACE_S)
    for pid in leftover_processes(cluster.temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not leftover_processes(cluster.temp_dir), STOP_GRACE_S)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def _wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)


def _signal_group(node: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session made the node's pid its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(node.pid, sig)


def leftover_processes(temp_dir: str) -> list[int]:
    """Pids of live processes of the cluster that owns `temp_dir`: those whose environment carries its marker."""
    marker = f"{MARKER_ENV}={temp_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session", name="local_ray_cluster")
def local_ray_cluster_fixture() -> Iterator[LocalRayCluster]:
    """A head plus one worker node (1 CPU each) on 127.0.0.1, torn down at the end of the session."""
    cluster = start_cluster(worker_nodes=1)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        leftover = leftover_processes(cluster.temp_dir)
        assert not leftover, f"Ray processes of {cluster.temp_dir} survived teardown: {leftover}"
