"""The flow against a local multi-process Ray cluster through Ray Jobs: each heavy step is a job on the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from flows.augment import augment
from tests.integration.conftest import QUICK_EVALUATION, tiny_config
from tests.integration.ray_cluster import LocalRayCluster
from vae_pipeline.errors import DataError
from vae_pipeline.generation.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_the_flow_runs_every_step_as_a_ray_job_on_the_cluster(
    local_ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    config = tiny_config(
        tmp_path,
        training={"epochs": 3},
        evaluation=QUICK_EVALUATION,
        generation={"rows": 1000, "num_workers": 1},
        ray={"address": local_ray_cluster.dashboard_url, "num_cpus": None},
    )
    state = augment(config=config.to_json(), return_state=True)
    assert state.is_completed()
    manifest = read_manifest(config.generation.output_url)
    assert manifest is not None and manifest.rows == 1000
    flow_run = state.state_details.flow_run_id
    jobs = JobSubmissionClient(local_ray_cluster.dashboard_url).list_jobs()
    ours = {job.submission_id: job.status for job in jobs if str(flow_run) in (job.submission_id or "")}
    steps = ("train", "stats", "evaluate", "generate")
    assert ours == {f"vae-{flow_run}-{step}-1": JobStatus.SUCCEEDED for step in steps}


def test_a_failing_job_fails_the_flow_with_its_error_and_commits_nothing(
    local_ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    config = tiny_config(
        tmp_path,
        data={"input_url": str(tmp_path / "no-such-table.parquet")},
        ray={"address": local_ray_cluster.dashboard_url, "num_cpus": None},
    )
    with pytest.raises(DataError, match=r"no-such-table\.parquet"):
        augment(config=config.to_json())
    assert not (tmp_path / "model" / "bundle.json").exists()
    assert read_manifest(config.generation.output_url) is None
