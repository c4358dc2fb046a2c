"""runtime.py: a cluster address that does not answer is a bounded, one-line error, before Ray waits on it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import free_port
from vae_pipeline.errors import ConfigError
from vae_pipeline.runtime import _check_client_reachable, _check_reachable


@pytest.mark.parametrize(
    ("scheme", "check", "hint"),
    [("", _check_reachable, "ray status --address"), ("ray://", _check_client_reachable, "Ray Client server")],
    ids=["gcs", "ray-client"],
)
def test_an_address_that_does_not_answer_fails_within_the_bound(
    scheme: str, check: Callable[..., None], hint: str
) -> None:
    address = f"{scheme}127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=hint) as raised:
        check(address, timeout_s=1.5)
    assert time.monotonic() - started < 10
    assert address in str(raised.value) and "\n" not in str(raised.value)


def test_an_answering_address_passes() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _check_reachable(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=1)


def test_a_dashboard_address_is_for_ray_jobs_not_for_one_step() -> None:
    with pytest.raises(ConfigError, match="Ray Jobs"):
        _check_reachable("http://127.0.0.1:8265")


@pytest.mark.parametrize("address", ["auto", "ray://127.0.0.1:10001"])
def test_addresses_ray_resolves_itself_are_left_to_ray(address: str) -> None:
    _check_reachable(address, timeout_s=0.1)
