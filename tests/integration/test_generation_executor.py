"""Where generation runs (issue 11): in this process or on Ray actors, with the same bytes either way.

A committed run that `resume` finds intact is verified in-process, without Ray; a damaged one is repaired.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import Generated, TrainedModel
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest

pytestmark = pytest.mark.slow

# A fresh interpreter, so that "Ray was not started" is not hidden by the Ray this test session runs.
RERUN = """
import json, sys
import ray
from vae_pipeline.config import load_config
from vae_pipeline.generation.job import run_generation

class Summaries(list):
    def start(self, *args, **kwargs): pass
    def advance(self, *args, **kwargs): pass
    def finish(self, summary): self.append(summary)

summaries = Summaries()
run_generation(load_config(sys.argv[1]), sys.argv[2], sys.argv[3], progress=summaries)
print(json.dumps({"ray_initialized": ray.is_initialized(), "summaries": summaries}))
"""


def shard_bytes(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(output.glob("part-*.parquet"))}


def files_of(output: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(output)): (p.stat().st_size, p.stat().st_mtime_ns) for p in output.rglob("*")}


def test_the_local_and_the_ray_executor_write_the_same_shards(trained: TrainedModel, tmp_path: Path) -> None:
    manifests = {}
    for executor in ("auto", "ray"):  # auto with one worker: in this process
        output = tmp_path / executor
        settings = {"output_url": str(output), "rows": 2000, "num_workers": 1, "executor": executor}
        config = trained.config.with_overrides({f"generation.{k}": v for k, v in settings.items()})
        run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)
        manifests[executor] = read_manifest(str(output))
    local, on_ray = manifests["auto"], manifests["ray"]
    assert local is not None and on_ray is not None
    assert (local.extra["executor"], on_ray.extra["executor"]) == ("local", "ray")
    assert local.run_id == on_ray.run_id and local.shards == on_ray.shards and len(local.shards) == 2
    assert shard_bytes(tmp_path / "auto") == shard_bytes(tmp_path / "ray")


def test_a_committed_rerun_with_resume_is_verified_without_ray(
    trained: TrainedModel, generated: Generated, tmp_path: Path
) -> None:
    output = generated.copy_to(tmp_path / "out")
    config = trained.config.with_overrides({"generation.output_url": str(output), "generation.resume": True})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_json()))
    before = files_of(output)

    result = subprocess.run(
        [sys.executable, "-c", RERUN, str(config_path), trained.model_url, trained.statistics_url],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "ray_initialized": False,
        "summaries": ["reused: 3,000 rows in 3 shards (checksums verified)"],
    }
    assert files_of(output) == before  # no claim, no lease, no shard record written


def test_a_damaged_shard_of_a_ray_written_run_is_rewritten_and_reported_repaired(
    trained: TrainedModel, generated: Generated, tmp_path: Path
) -> None:
    output = generated.copy_to(tmp_path / "out")
    damaged = output / "part-00001.parquet"
    damaged.write_bytes(b"\0" * damaged.stat().st_size)
    manifest_before = (output / "_manifest.json").read_bytes()
    summaries: list[str] = []

    class Summaries:
        def start(self, step: str, total: int | None = None, unit: str = "") -> None:
            pass

        def advance(self, n: int = 1, detail: str = "") -> None:
            pass

        def finish(self, summary: str) -> None:
            summaries.append(summary)

    config = trained.config.with_overrides({"generation.output_url": str(output), "generation.resume": True})
    run_generation(config, trained.model_url, trained.statistics_url, progress=Summaries())
    # One damaged shard and two workers: rewritten in this process, with the bytes the Ray actor wrote.
    assert shard_bytes(output) == shard_bytes(generated.output)
    assert (output / "_manifest.json").read_bytes() == manifest_before
    assert len(summaries) == 1 and summaries[0].startswith("repaired: 1 of 3 shards rewritten (1,000 rows in 1 shard")
