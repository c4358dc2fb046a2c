"""Where a step runs: `auto` picks this process when one process suffices; an impossible `local` is refused."""

from __future__ import annotations

import pytest

from vae_pipeline.config import RayConfig, parse_config
from vae_pipeline.errors import ConfigError
from vae_pipeline.executor import RAY_ADDRESS_VAR, Workload, check_local_settings, choose_executor, local_memory_limit


@pytest.fixture(autouse=True)
def _not_a_ray_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RAY_ADDRESS_VAR, raising=False)


def test_auto_runs_a_single_worker_step_here() -> None:
    assert choose_executor("auto", RayConfig(), Workload("training", 1, 10_000)) == "local"


@pytest.mark.parametrize(
    ("ray", "work"),
    [
        (RayConfig(address="ray://head:10001"), Workload("training", 1)),
        (RayConfig(), Workload("statistics", 2)),
        (RayConfig(), Workload("training", 1, memory_bytes=10 * 2**50)),
    ],
)
def test_auto_uses_ray_for_clusters_workers_and_large_inputs(ray: RayConfig, work: Workload) -> None:
    assert choose_executor("auto", ray, work) == "ray"


def test_a_ray_jobs_driver_stays_on_its_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RAY_ADDRESS_VAR, "127.0.0.1:6379")
    assert choose_executor("auto", RayConfig(), Workload("generation", 1)) == "ray"


def test_ray_is_always_honoured() -> None:
    assert choose_executor("ray", RayConfig(), Workload("training", 1)) == "ray"


@pytest.mark.parametrize(
    ("ray", "work", "message"),
    [
        (RayConfig(), Workload("training", 2), r"^training.executor is local, but training.num_workers is 2 .*"
         r"set training.num_workers: 1 or training.executor: ray$"),
        (RayConfig(address="auto"), Workload("statistics", 1), r"ray.address is set .* set statistics.executor: ray$"),
        (RayConfig(), Workload("training", 1, memory_bytes=10 * 2**50), r"GiB in memory, more than the local "
         r"executor holds .* set training.executor: ray, which streams it$"),
    ],
)  # fmt: skip
def test_an_impossible_local_is_one_line_naming_the_way_out(ray: RayConfig, work: Workload, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        choose_executor("local", ray, work)
    assert "\n" not in str(error.value)


def test_the_memory_limit_is_a_share_of_this_machine() -> None:
    assert 0 < local_memory_limit() < 2**50


def test_priors_on_a_gpu_refuse_a_local_statistics_step_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vae_pipeline.executor._cuda_available", lambda: False)
    priors: dict[str, object] = {"use_gpu": True}
    config = parse_config({"statistics": {"executor": "local", "priors": priors}})
    with pytest.raises(ConfigError, match=r"statistics\.executor is local, but use_gpu is set"):
        check_local_settings(config)
    priors |= {"flow": None, "diffusion": None}  # nothing to train: nothing needs the GPU
    check_local_settings(parse_config({"statistics": {"executor": "local", "priors": priors}}))
