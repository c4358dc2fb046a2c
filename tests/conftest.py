"""Shared fixtures: the shipped penguins table, small configs and a local S3 (moto) with fake credentials."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PENGUINS = str(REPO / "data" / "penguins.parquet")

# Keep Prefect's ephemeral API and state out of the user's home, and quiet. Prefect creates its home without
# parents, so a fresh clone (no out/ yet) needs the folder made here. `make test` runs two pytest-xdist workers:
# each gets a home of its own (its own SQLite database), since two ephemeral servers on one database lock it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
PREFECT_HOME = Path(
    os.environ.setdefault("PREFECT_HOME", str(REPO / "out" / f".prefect-test{_WORKER and '-' + _WORKER}"))
)
PREFECT_HOME.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# DataLoader workers in the reader tests start from a forkserver (a process that ran a Prefect flow cannot fork
# them). A forkserver that has imported torch and the reader once forks each worker in milliseconds; otherwise every
# worker imports them itself, seconds per DataLoader. The dataset is still pickled to each worker.
multiprocessing.set_forkserver_preload(["torch", "vae_pipeline.readers"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the local Ray cluster (tests/integration/ray_cluster.py) run last, each file's in its order.

    The cluster lives until the session ends; idle, its nodes still take ~7 CPU-seconds a minute, which the rest
    of the suite would otherwise pay for on a 2-core machine.
    """
    items.sort(key=lambda item: "local_ray_cluster" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def penguins_url() -> str:
    return PENGUINS


# ------------------------------------------------------------------ S3: a moto server on 127.0.0.1
# Ray workers inherit the environment of the process that starts Ray, so the endpoint and the fake credentials
# go into os.environ here, at import, before any fixture can start Ray. This is also how users point the
# pipeline at MinIO or any S3-compatible store (docs/storage.md): environment or fsspec config, never the YAML.
# The config and credential files point nowhere and the EC2 metadata lookup is off, so no test can pick up a real
# AWS identity or reach beyond the loopback interface.


def free_port() -> int:
    """A loopback port that nothing listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


S3_PORT = free_port()
S3_ENDPOINT = f"http://127.0.0.1:{S3_PORT}"
S3_ACCESS_KEY = "AKIAVAEPIPELINETEST1"
S3_SECRET = "s3cr3t-value-xyz"  # distinctive, so tests can assert it never lands in an artifact, a log or an error
_NOWHERE = REPO / "out" / ".no-such-config"
for _name in (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(_NOWHERE / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(_NOWHERE / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "FSSPEC_CONFIG_DIR": str(_NOWHERE),
        "FSSPEC_S3_ENDPOINT_URL": S3_ENDPOINT,
    }
)
if "fsspec" in sys.modules:  # fsspec reads FSSPEC_* at import; refresh if a plugin imported it first
    import fsspec.config

    fsspec.config.set_conf_env(fsspec.config.conf)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 on 127.0.0.1 for the session; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    yield S3_ENDPOINT
    server.stop()


def create_bucket() -> str:
    """A new, empty bucket with a unique name on the moto server."""
    import fsspec

    name = f"test-{uuid.uuid4().hex[:16]}"
    fsspec.filesystem("s3").mkdir(name)
    return name


def delete_bucket(name: str) -> None:
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.rm(name, recursive=True)
    fs.invalidate_cache()


@pytest.fixture()
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh bucket name for one test, deleted with its objects afterwards."""
    name = create_bucket()
    yield name
    delete_bucket(name)
