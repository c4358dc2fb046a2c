"""Exactly-once generation under faults: killed workers, a killed driver, lost and corrupted shards, and resume.

Every test compares against a clean, uninterrupted run of the same config: after recovery the dataset must have
the exact row count, no row twice, the same bytes shard for shard, and a manifest that agrees with the files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pa_ds
import pytest
import ray
import yaml
from ray.util.state import list_actors

from tests.conftest import REPO
from tests.integration.conftest import TrainedModel
from tests.integration.test_cli import assert_one_line_error, vae_pipeline
from vae_pipeline.cli import describe
from vae_pipeline.config import PipelineConfig
from vae_pipeline.errors import OutputExistsError
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.generation.output import RECORDS_DIR, read_claim

pytestmark = pytest.mark.slow

ROWS, ROWS_PER_SHARD = 60_000, 5_000  # 12 shards: enough for a fault to land between the first and the last


def config_for(trained: TrainedModel, output: Path, **generation: object) -> PipelineConfig:
    settings = {"output_url": str(output), "rows": ROWS, "rows_per_shard": ROWS_PER_SHARD, **generation}
    return trained.config.with_overrides({f"generation.{k}": v for k, v in settings.items()})


def generate(trained: TrainedModel, output: Path, **generation: object) -> str:
    config = config_for(trained, output, **generation)
    return run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url)


def copy_of(clean: Path, output: Path) -> Path:
    """A finished run of the test config at `output`: generating it there gives the same bytes (assert_same_dataset)."""
    shutil.copytree(clean, output)
    return output


def session_ray(config: PipelineConfig) -> PipelineConfig:
    """The config pointed at this session's Ray, so a `vae-pipeline` subprocess connects instead of starting one."""
    return config.with_overrides({"ray.address": ray.get_runtime_context().gcs_address, "ray.num_cpus": None})


def shard_bytes(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(output.glob("part-*.parquet"))}


@pytest.fixture(scope="module")
def clean_run(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("clean") / "out"
    generate(trained, output)
    return output


def assert_same_dataset(output: Path, clean: Path) -> None:
    """Exact rows, none more often than in the clean run, its bytes, and a manifest that matches the files."""
    assert shard_bytes(output) == shard_bytes(clean)
    manifest, reference = read_manifest(str(output)), read_manifest(str(clean))
    assert manifest is not None and reference is not None
    assert manifest.run_id == reference.run_id
    assert manifest.shards == reference.shards
    for record in manifest.shards:
        assert hashlib.sha256((output / record.name).read_bytes()).hexdigest() == record.sha256
    table = pa_ds.dataset(str(output), format="parquet").to_table()
    assert table.num_rows == manifest.rows == ROWS
    # Generated rows may repeat by chance (a discrete or categorical table repeats rows as real ones do), so a shard
    # written twice shows as rows counted more often than in the clean run.
    clean_rows = Counter(_row_keys(pa_ds.dataset(str(clean), format="parquet").to_table()))
    assert Counter(_row_keys(table)) == clean_rows, "a row appears more often than in the clean run"
    assert not list(output.glob(".*.tmp")), "a temporary file of a killed writer was left behind"


def _row_keys(table: pa.Table) -> list[tuple[object, ...]]:
    columns = [table.column(name).to_pylist() for name in table.column_names]
    return list(zip(*columns, strict=True))


def test_a_killed_worker_process_is_restarted_and_its_shard_redone(
    trained: TrainedModel, clean_run: Path, tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_a_worker(_record: object) -> None:
        if killed:
            return
        address = ray.get_runtime_context().gcs_address  # other Ray instances may run on this machine
        filters = [("class_name", "=", "GenerationActor"), ("state", "=", "ALIVE")]
        actors = list_actors(address=address, filters=filters)
        pid = actors[0].pid
        os.kill(pid, signal.SIGKILL)  # a real process death, mid-shard: the pool keeps every actor busy
        killed.append(pid)

    config = config_for(trained, tmp_path / "out")
    run_generation(config, model_url=trained.model_url, statistics_url=trained.statistics_url, on_shard=kill_a_worker)
    assert killed
    assert_same_dataset(tmp_path / "out", clean_run)
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest is not None
    pids = {worker["pid"] for worker in manifest.extra["workers"]}
    assert killed[0] not in pids and len(pids) == 2  # the dead worker was replaced by a restarted one


def test_a_killed_driver_leaves_no_commit_and_resume_finishes_the_same_bytes(
    trained: TrainedModel, clean_run: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    config = session_ray(config_for(trained, output, num_workers=1))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_json()))
    args = ["generate", "--config", str(config_path), "--model", trained.model_url]
    driver = subprocess.Popen(
        [sys.executable, "-m", "vae_pipeline.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: len(list((output / RECORDS_DIR).glob("*.json"))) >= 3, timeout=300)
        driver.send_signal(signal.SIGKILL)  # between shards, as far as the driver is concerned
    finally:
        driver.kill()
        driver.wait()
    assert read_manifest(str(output)) is None, "the driver died before the commit, so there must be none"
    status = describe(str(output))["unfinished generation run"]
    assert status["shards"] == 12 and 3 <= status["shards_done"] < 12

    with pytest.raises(OutputExistsError, match="--resume"):
        generate(trained, output)
    generate(trained, output, resume=True)
    assert_same_dataset(output, clean_run)
    assert read_claim(str(output)) is not None


def test_resume_rewrites_exactly_the_missing_and_corrupted_shards(
    trained: TrainedModel, clean_run: Path, tmp_path: Path
) -> None:
    output = copy_of(clean_run, tmp_path / "out")
    (output / "_manifest.json").unlink()  # as if the driver died just before the commit
    (output / "part-00003.parquet").unlink()
    corrupted = output / "part-00007.parquet"
    payload = bytearray(corrupted.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # same size, different bytes: only the checksum can tell
    corrupted.write_bytes(bytes(payload))
    (output / RECORDS_DIR / "part-00010.json").unlink()  # a shard whose record never landed
    untouched = {p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet")}

    generate(trained, output, resume=True)
    assert_same_dataset(output, clean_run)
    rewritten = {p.name for p in output.glob("part-*.parquet") if p.stat().st_mtime_ns != untouched.get(p.name)}
    assert rewritten == {"part-00003.parquet", "part-00007.parquet", "part-00010.parquet"}


def test_a_corrupted_shard_of_a_committed_run_is_found_and_repaired(
    trained: TrainedModel, clean_run: Path, tmp_path: Path
) -> None:
    output = copy_of(clean_run, tmp_path / "out")
    corrupted = output / "part-00005.parquet"
    corrupted.write_bytes(b"\0" * corrupted.stat().st_size)
    status = describe(str(output), verify=True)["shards"]
    assert status["shards_missing_or_damaged"] == ["part-00005.parquet"]
    manifest_before = (output / "_manifest.json").read_bytes()

    generate(trained, output, resume=True)
    assert_same_dataset(output, clean_run)
    assert (output / "_manifest.json").read_bytes() == manifest_before  # the commit was never withdrawn


def test_resume_never_adopts_another_runs_shards(trained: TrainedModel, clean_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    generate(trained, output, seed=99)
    (output / "_manifest.json").unlink()
    with pytest.raises(OutputExistsError, match="another run"):
        generate(trained, output, resume=True)
    generate(trained, output, resume=True, overwrite=True)
    assert_same_dataset(output, clean_run)


def test_resume_from_the_command_line_and_inspect_lists_the_missing_shards(
    trained: TrainedModel, clean_run: Path, tmp_path: Path
) -> None:
    output = copy_of(clean_run, tmp_path / "out")
    (output / "_manifest.json").unlink()
    for index in (2, 3, 4, 9):
        (output / f"part-{index:05d}.parquet").unlink()
    inspected = vae_pipeline("inspect", str(output), "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert '"shards_missing": "2-4, 9"' in inspected.stdout.replace("\n", "")
    flags = ["--model", trained.model_url, "--output", str(output), "--rows", str(ROWS), "--seed", "5"]
    flags += ["--sampler", "gaussian"]
    # The bundle's config says 1000 rows per shard; the interrupted run used 5000, so it is another run.
    refused = vae_pipeline("generate", *flags)
    assert_one_line_error(refused, 4, "already holds", "--overwrite")
    config = session_ray(config_for(trained, output)).to_json()  # which Ray runs it is no part of the run's identity
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    unresumed = vae_pipeline("generate", "--config", str(config_path), *flags)
    assert_one_line_error(unresumed, 4, "unfinished run", "--resume")
    resumed = vae_pipeline("generate", "--config", str(config_path), *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_dataset(output, clean_run)


def _wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")
