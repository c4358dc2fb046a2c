"""A local Ray instance's processes know its address, so Ray code that looks the cluster up finds this one (#10)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import ray

from vae_pipeline import runtime
from vae_pipeline.config import RayConfig


@pytest.fixture
def init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """ray.init replaced by a recorder of its arguments and of the environment it would hand to Ray's processes."""
    calls: list[dict[str, Any]] = []

    def fake_init(**kwargs: Any) -> None:
        calls.append({"kwargs": kwargs, "env": {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}})

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})
    monkeypatch.setattr(runtime, "_configure_ray_data", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_GCS_SERVER_PORT", raising=False)
    return calls


def test_a_local_instance_starts_on_a_chosen_port_that_its_workers_are_told(init_calls: list[dict[str, Any]]) -> None:
    runtime.ensure_ray(RayConfig(num_cpus=2))
    (call,) = init_calls
    assert call["kwargs"]["address"] == "local"  # a new instance, not the RAY_ADDRESS set for its processes
    port = call["env"]["RAY_GCS_SERVER_PORT"]
    assert port and port.isdigit()
    assert call["env"]["RAY_ADDRESS"] == f"127.0.0.1:{port}"
    assert "RAY_ADDRESS" not in os.environ and "RAY_GCS_SERVER_PORT" not in os.environ  # the driver's is restored


def test_the_drivers_environment_is_restored_when_start_up_fails(
    init_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_GCS_SERVER_PORT", "7777")

    def failing_init(**kwargs: Any) -> None:
        raise RuntimeError("raylet did not start")

    monkeypatch.setattr(ray, "init", failing_init)
    with pytest.raises(RuntimeError):
        runtime.ensure_ray(RayConfig())
    assert os.environ["RAY_GCS_SERVER_PORT"] == "7777" and "RAY_ADDRESS" not in os.environ


@pytest.mark.parametrize(
    ("address", "env_address"),
    [("", "10.0.0.5:6379"), ("10.0.0.5:6379", None), ("auto", None)],
)
def test_a_cluster_address_is_connected_to_as_given(
    init_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    address: str,
    env_address: str | None,
) -> None:
    """A Ray Job's driver (RAY_ADDRESS set, ray.address empty) and an explicit address connect; nothing is pinned."""
    if env_address:
        monkeypatch.setenv("RAY_ADDRESS", env_address)
    monkeypatch.setattr(runtime, "_check_reachable", lambda address: None)
    runtime.ensure_ray(RayConfig(address=address))
    (call,) = init_calls
    assert call["kwargs"].get("address") == (address or None)
    assert call["env"] == {"RAY_ADDRESS": env_address, "RAY_GCS_SERVER_PORT": None}
