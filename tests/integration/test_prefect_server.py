"""A real Prefect server on 127.0.0.1: the deployment and its schedule are registered, a triggered run completes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import REPO
from tests.integration.conftest import QUICK_EVALUATION, tiny_config
from tests.integration.test_cli import assert_one_line_error, vae_pipeline
from vae_pipeline.generation.manifest import read_manifest

pytestmark = pytest.mark.slow
SERVE = [sys.executable, "-m", "vae_pipeline.cli", "serve"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(condition: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free loopback port with its own home; yields the env that points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _healthy(api_url), 180, f"the Prefect server at {api_url} answering")
        yield {**env, "PREFECT_API_URL": api_url}
    finally:
        _stop(server)
        log.close()


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_serve_registers_the_schedule_and_a_triggered_run_completes(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    config = tiny_config(
        tmp_path, training={"epochs": 3}, evaluation=QUICK_EVALUATION, generation={"rows": 500, "num_workers": 1}
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_json()))
    log = (tmp_path / "serve.log").open("wb")
    serving = subprocess.Popen(
        [*SERVE, str(config_path), "--cron", "0 2 * * *", "--timezone", "Europe/Paris", "--name", "nightly"],
        cwd=REPO,
        env={**prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},  # picks the triggered run up within 1 s, not 10
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with (
            temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}),
            get_client(sync_client=True) as client,
        ):
            deployment = _wait_for(lambda: _deployment(client, "vae-augment/nightly"), 180, "registration")
            schedules = client.read_deployment_schedules(deployment.id)
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in schedules] == [
                ("0 2 * * *", "Europe/Paris", True)
            ]
            assert deployment.parameters == {"config_url": str(config_path)}
            run = client.create_flow_run_from_deployment(deployment.id)
            final = _wait_for(lambda: _final_state(client, run.id), 420, "the triggered run finishing")
        assert final.is_completed(), (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        _stop(serving)
        log.close()
    manifest = read_manifest(config.generation.output_url)
    assert manifest is not None and manifest.rows == 500


def test_a_cron_that_does_not_parse_is_a_one_line_error(tmp_path: Path) -> None:
    result = vae_pipeline("serve", str(REPO / "configs" / "demo.yaml"), "--cron", "0 25 * * *")
    assert_one_line_error(result, 2, "--cron '0 25 * * *'", "does not parse", "0 2 * * *")


def _deployment(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _final_state(client: Any, flow_run_id: Any) -> Any:
    state = client.read_flow_run(flow_run_id).state
    return state if state is not None and state.is_final() else None


def test_prefect_yaml_registers_the_augment_deployment_and_its_schedule(prefect_server: dict[str, str]) -> None:
    def prefect(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=REPO,
            env=prefect_server,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    created = prefect("work-pool", "create", "vae-pipeline-process", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect("--no-prompt", "deploy", "-n", "augment")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with (
        temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        deployment = client.read_deployment_by_name("vae-augment/augment")
        schedules = client.read_deployment_schedules(deployment.id)
    assert deployment.work_pool_name == "vae-pipeline-process"
    assert deployment.entrypoint == "flows/augment.py:augment"
    assert deployment.parameters == {"config_url": "configs/demo.yaml"}
    assert [(s.schedule.cron, s.active) for s in schedules] == [("0 2 * * *", True)]
