"""Two at once on one machine: two drivers on one output (the second is refused), two pipelines each with its own Ray.

Both were real failures: a second `generate` on an output being written decided the output was its own, and Ray
Train's PlacementGroupCleaner of one local pipeline died with "Found multiple active Ray instances" once another
pipeline's Ray ran on the same machine (issue 10).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pa_ds
import pytest
import ray
import yaml

from tests.conftest import REPO
from tests.integration.conftest import TrainedModel
from tests.integration.test_cli import assert_one_line_error, vae_pipeline
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.lease import newest_lease
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.generation.output import read_claim

pytestmark = pytest.mark.slow


def test_a_second_driver_on_an_output_being_written_is_refused_and_the_first_completes(
    trained: TrainedModel, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    config = trained.config.with_overrides({"generation.output_url": str(output)})
    # The refused drivers get this session's Ray, so that nothing they might start competes for the CPUs.
    on_session_ray = config.with_overrides({"ray.address": ray.get_runtime_context().gcs_address, "ray.num_cpus": None})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(on_session_ray.to_json()))
    refused: list[subprocess.CompletedProcess[str]] = []

    def second_drivers(_record: object) -> None:
        """While the first driver holds the output (between its shards), two more try to write it."""
        if refused:
            return
        for flags in ([], ["--overwrite"]):
            refused.append(vae_pipeline("generate", "--config", str(config_path), "--model", trained.model_url, *flags))

    url = run_generation(
        config, model_url=trained.model_url, statistics_url=trained.statistics_url, on_shard=second_drivers
    )

    for result in refused:
        assert_one_line_error(result, 4, "is being written by another driver", "wait for it to finish")
    manifest = read_manifest(str(output))
    assert manifest is not None and url.endswith("_manifest.json")
    assert manifest.rows == config.generation.rows and len(manifest.shards) == 3
    for record in manifest.shards:
        assert hashlib.sha256((output / record.name).read_bytes()).hexdigest() == record.sha256
    assert pa_ds.dataset(str(output), format="parquet").count_rows() == config.generation.rows
    claim = read_claim(str(output))
    assert claim is not None and claim.run_id == manifest.run_id
    number, lease = newest_lease(str(output))
    assert number == 1 and lease is not None and lease.released  # the refused drivers left no lease of their own
    assert not list(output.rglob("*.tmp"))


_POINTED_AT_ITS_OWN_CLUSTER = """
import json, pathlib, sys, time
import ray
from vae_pipeline.config import RayConfig
from vae_pipeline.runtime import ensure_ray

ensure_ray(RayConfig(num_cpus=1))
ready = pathlib.Path(sys.argv[1])
ready.touch()
deadline = time.monotonic() + 120
while len(list(ready.parent.glob("*.ready"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.1)  # both instances run before either asks

@ray.remote(num_cpus=0)
def nodes_seen_by_a_worker():
    from ray.util.state import list_nodes  # what Ray Train's PlacementGroupCleaner uses: no address given
    return [node.node_id for node in list_nodes()]

print(json.dumps({"own": ray.get_runtime_context().get_node_id(), "seen": ray.get(nodes_seen_by_a_worker.remote())}))
"""


def test_two_local_pipelines_each_use_their_own_ray_instance(tmp_path: Path) -> None:
    """Each local instance's workers are told its address, so the state API asks their own cluster."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    drivers = [
        subprocess.Popen(
            [sys.executable, "-c", _POINTED_AT_ITS_OWN_CLUSTER, str(tmp_path / f"{index}.ready")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    results = []
    for driver in drivers:
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr[-3000:]
        assert "multiple active Ray instances" not in stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    for result in results:
        assert result["seen"] == [result["own"]]
    assert results[0]["own"] != results[1]["own"]
