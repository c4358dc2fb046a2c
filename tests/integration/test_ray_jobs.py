"""Steps as Ray Jobs against a real local cluster: a head and a worker node, each its own `ray start` process."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.integration.ray_cluster import LocalRayCluster
from vae_pipeline.errors import ConfigError
from vae_pipeline.ray_jobs import RayJobError, attempts_of, run_step_as_job, step_entrypoint

pytestmark = pytest.mark.slow


def unique_key(step: str) -> str:
    # Jobs outlive a test on the session-scoped cluster: every test claims its own keys.
    return f"vae-{uuid.uuid4().hex[:8]}-{step}"


def python(code: str) -> str:
    return shlex.join(["python", "-c", code])


def statuses(cluster: LocalRayCluster, key: str) -> dict[int, JobStatus]:
    jobs = JobSubmissionClient(cluster.dashboard_url).list_jobs()
    return {attempt: job.status for attempt, job in attempts_of(jobs, key).items()}


def test_a_succeeded_step_runs_once_on_the_cluster(local_ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    code = (
        "import ray\n"
        "ray.init()\n"  # RAY_ADDRESS is set by the job: this is the cluster, not a new local instance
        "alive = [node for node in ray.nodes() if node['Alive']]\n"
        "print(f'alive nodes: {len(alive)}, CPUs: {ray.cluster_resources()[\"CPU\"]:g}', flush=True)\n"
        f"open({str(runs)!r}, 'a').write('ran\\n')\n"
    )
    key, lines = unique_key("train"), []

    first = run_step_as_job(local_ray_cluster.dashboard_url, key, python(code), log=lines.append, poll_s=0.2)
    again: list[str] = []
    second = run_step_as_job(local_ray_cluster.dashboard_url, key, python(code), log=again.append)

    assert first == second == f"{key}-1"
    assert "alive nodes: 2, CPUs: 2" in lines  # streamed from the job's log, run by the two-node cluster
    assert runs.read_text() == "ran\n"
    assert statuses(local_ray_cluster, key) == {1: JobStatus.SUCCEEDED}
    assert any("already done" in line for line in again)


def test_a_cli_user_error_surfaces_as_that_error(local_ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model_url: out/model\nbogus_key: 1\n")
    key = unique_key("train")

    with pytest.raises(ConfigError, match="unknown key 'bogus_key'") as raised:
        run_step_as_job(local_ray_cluster.dashboard_url, key, step_entrypoint("train", str(config)), poll_s=0.2)

    assert "\n" not in str(raised.value)
    assert f"{key}-1" in str(raised.value)
    assert statuses(local_ray_cluster, key) == {1: JobStatus.FAILED}


def test_a_failed_job_raises_and_a_retry_submits_the_next_attempt(
    local_ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    code = (
        "import os, sys\n"
        f"retry = os.path.exists({str(flag)!r})\n"
        f"open({str(flag)!r}, 'w').close()\n"
        "print('second attempt' if retry else 'first attempt: Traceback, an unexpected crash')\n"
        "sys.exit(0 if retry else 1)\n"
    )
    key = unique_key("stats")

    with pytest.raises(RayJobError) as raised:
        run_step_as_job(local_ray_cluster.dashboard_url, key, python(code), poll_s=0.2)
    retried = run_step_as_job(local_ray_cluster.dashboard_url, key, python(code), poll_s=0.2)
    once_more = run_step_as_job(local_ray_cluster.dashboard_url, key, python(code))

    message = str(raised.value)
    assert f"{key}-1 FAILED" in message and "exit code 1" in message
    assert "first attempt: Traceback, an unexpected crash" in message
    assert retried == once_more == f"{key}-2"
    assert statuses(local_ray_cluster, key) == {1: JobStatus.FAILED, 2: JobStatus.SUCCEEDED}


def test_a_running_job_is_followed_not_submitted_again(local_ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    code = (
        "import time\n"
        "print('started', flush=True)\n"
        "time.sleep(3)\n"
        f"open({str(runs)!r}, 'a').write('ran\\n')\n"
        "print('done')\n"
    )
    key, lines = unique_key("generate"), []
    # A previous try of the task submitted the job, then the task died: its retry finds the job running.
    JobSubmissionClient(local_ray_cluster.dashboard_url).submit_job(entrypoint=python(code), submission_id=f"{key}-1")

    followed = run_step_as_job(local_ray_cluster.dashboard_url, key, python(code), log=lines.append, poll_s=0.2)

    assert followed == f"{key}-1"
    assert any("attaching to" in line for line in lines)
    assert lines.index("started") < lines.index("done")
    assert runs.read_text() == "ran\n"
    assert statuses(local_ray_cluster, key) == {1: JobStatus.SUCCEEDED}
