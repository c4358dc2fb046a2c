"""The pipeline through Ray Client (`ray.address: ray://HEAD:PORT`) against a local two-node cluster.

The steps are the `vae-pipeline` CLI's commands in a process of their own: a process holds one Ray connection,
and this test process may hold a local instance already. The three commands share that process and its one
Ray Client connection, as the flow's steps do: a process per command is a Ray job per command, which imports,
connects and starts every Ray worker process afresh (stats and generate took ~16 s and ~9 s that way on an idle
2-core machine, ~8 s and ~4 s here). Through Ray Client, `train` and `stats` run their Ray Data and Ray Train
work in a driver task on the head node (`runtime.run_as_driver`); `generate` creates its actors from the client.
The evidence that the work ran on the cluster comes from the cluster itself: its job list, its task list and its
worker log files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ray.job_submission import JobDetails, JobSubmissionClient
from ray.util.state import list_nodes, list_tasks

from tests.conftest import REPO, free_port
from tests.integration.conftest import tiny_config
from tests.integration.ray_cluster import LocalRayCluster
from vae_pipeline.bundle import load_bundle
from vae_pipeline.config import PipelineConfig
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.runtime import CONNECT_TIMEOUT_S

pytestmark = pytest.mark.slow

STEP_TIMEOUT_S = 300
ROWS = 1000


def python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -c code args...` from the repository, without this process's Ray address."""
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    environment.update({"PYTHONPATH": str(REPO), "COLUMNS": "200", **env})
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )


def vae_pipeline(
    *args: str, connect_timeout_s: float = CONNECT_TIMEOUT_S, **env: str
) -> subprocess.CompletedProcess[str]:
    """The CLI as `vae-pipeline` runs it (`cli.main`), waiting `connect_timeout_s` for a Ray address to answer."""
    patch = f"import vae_pipeline.runtime as r; r.CONNECT_TIMEOUT_S = {connect_timeout_s}"
    return python(f"{patch}\nfrom vae_pipeline.cli import main\nmain()", *args, **env)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's one-line error: exit code 2 (ConfigError), a single `error: ` line on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def write_config(config: PipelineConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump(config.to_json()))
    return str(path)


def client_jobs(cluster: LocalRayCluster) -> dict[str, JobDetails]:
    """The cluster's jobs whose driver is a Ray Client server: one per client connection."""
    jobs = JobSubmissionClient(cluster.dashboard_url).list_jobs()
    return {job.job_id: job for job in jobs if job.job_id and "ray.util.client.server" in (job.entrypoint or "")}


# train -> stats -> generate through the CLI's own commands, one after the other in one process.
CLI_STEPS = """
import sys, time
from vae_pipeline.cli import app
from vae_pipeline.logs import configure_logging

configure_logging()
config, model = sys.argv[1:]
for step in (["train"], ["stats", "--model", model], ["generate"]):
    started = time.monotonic()
    app([*step, "--config", config], standalone_mode=False)
    print(f"{step[0]} through Ray Client: {time.monotonic() - started:.1f}s", flush=True)
"""


@dataclass(frozen=True)
class ClientRun:
    config: PipelineConfig
    result: subprocess.CompletedProcess[str]
    jobs: dict[str, JobDetails]  # the Ray Client jobs opened on the cluster while the steps ran


@pytest.fixture(scope="module")
def client_run(local_ray_cluster: LocalRayCluster, tmp_path_factory: pytest.TempPathFactory) -> ClientRun:
    """train -> stats -> generate in a process connected through Ray Client to the session's cluster."""
    root = tmp_path_factory.mktemp("ray-client")
    config = tiny_config(
        root,
        training={"epochs": 2},
        generation={"rows": ROWS, "rows_per_shard": ROWS // 2, "num_workers": 1},
        ray={"address": local_ray_cluster.client_address, "num_cpus": None},
    )
    before = set(client_jobs(local_ray_cluster))
    result = python(CLI_STEPS, write_config(config, root / "config.yaml"), config.model_url)
    print(result.stdout)  # each step's time, in the report with -rP
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = {job_id: job for job_id, job in client_jobs(local_ray_cluster).items() if job_id not in before}
    return ClientRun(config, result, jobs)


def test_train_stats_and_generate_through_ray_client_commit_a_readable_dataset(client_run: ClientRun) -> None:
    config = client_run.config
    manifest = read_manifest(config.generation.output_url)
    assert manifest is not None and manifest.rows == ROWS
    assert [shard.rows for shard in manifest.shards] == [ROWS // 2, ROWS // 2]
    output = Path(config.generation.output_url)
    table = pq.ParquetDataset([str(output / shard.name) for shard in manifest.shards]).read()
    bundle = load_bundle(config.model_url)
    assert table.num_rows == ROWS
    assert table.schema.names == bundle.transform.schema.names
    assert table.column("species").null_count == 0
    assert (Path(config.model_url) / "statistics" / "posterior.json").exists()
    assert len(bundle.metrics) == config.training.epochs


def test_each_step_ran_on_the_cluster_as_a_ray_client_job(
    client_run: ClientRun, local_ray_cluster: LocalRayCluster
) -> None:
    # One Ray Client job per connection (more if the head failed to start a session and the CLI connected again).
    assert client_run.jobs
    used: set[str] = set()
    # train and stats: their driver tasks ran on the head node, in those client jobs.
    head = next(node.node_id for node in list_nodes(address=local_ray_cluster.dashboard_url) if node.is_head_node)
    for name in ("vae-pipeline:_train", "vae-pipeline:_compute"):
        tasks = list_tasks(address=local_ray_cluster.dashboard_url, filters=[("name", "=", name)], detail=True)
        ours = [task for task in tasks if task.job_id in client_run.jobs]
        assert [(task.state, task.node_id) for task in ours] == [("FINISHED", head)], tasks
        used.add(ours[0].job_id)
    # generate: every worker the manifest names was a worker process of this cluster, in a client job.
    manifest = read_manifest(client_run.config.generation.output_url)
    assert manifest is not None
    logs = Path(local_ray_cluster.temp_dir) / "session_latest" / "logs"
    for worker in manifest.extra["workers"]:
        files = [path.name for path in logs.glob(f"worker-*-{worker['pid']}.out")]
        job_ids = {name.rsplit("-", 2)[1] for name in files}  # worker-<worker id>-<job id>-<pid>.out
        assert len(job_ids) == 1 and job_ids <= set(client_run.jobs), (worker, files)
        used |= job_ids
    assert len(used) == 1  # one process, one connection
    assert {client_run.jobs[job_id].status for job_id in used} == {"SUCCEEDED"}


def test_a_closed_ray_client_port_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    address = f"ray://127.0.0.1:{free_port()}"
    config = tiny_config(tmp_path, ray={"address": address, "num_cpus": None})
    result = vae_pipeline("train", "--config", write_config(config, tmp_path / "config.yaml"), connect_timeout_s=2)
    line = error_line(result)
    assert address in line and "within 2s" in line
    assert f"nc -vz 127.0.0.1 {address.rsplit(':', 1)[1]}" in line
    assert not (tmp_path / "model").exists()


def test_a_port_that_is_no_ray_client_server_is_a_one_line_error(
    local_ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    # The GCS port answers TCP but is no Ray Client server: Ray retries, then fails (bounded by its own settings).
    address = f"ray://{local_ray_cluster.gcs_address}"
    config = tiny_config(tmp_path, ray={"address": address, "num_cpus": None})
    fast = {"RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1", "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "1"}
    result = vae_pipeline("train", "--config", write_config(config, tmp_path / "config.yaml"), **fast)
    line = error_line(result)
    assert address in line and "not its GCS port" in line
    assert not (tmp_path / "model").exists()
