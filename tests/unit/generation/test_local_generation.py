"""job.py's local executor and its committed-run check, end to end on a tiny real bundle, with Ray refused outright.

`ensure_ray` is replaced by a failure, so any path that would start (or connect to) Ray fails the test, whatever
Ray instance other tests left running in this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.unit.generation.test_worker import fit_everything
from vae_pipeline.bundle import default_statistics_url
from vae_pipeline.config import PipelineConfig
from vae_pipeline.errors import ConfigError
from vae_pipeline.executor import one_thread
from vae_pipeline.generation import job
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.generation.output import RECORDS_DIR, read_claim
from vae_pipeline.posterior.aggregate import save_posterior

ROWS, ROWS_PER_SHARD = 300, 150  # two shards


class Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.advanced = 0
        self.summaries: list[str] = []

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        pass

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.advanced += n

    def finish(self, summary: str) -> None:
        self.summaries.append(summary)


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved tiny bundle with its statistics beside it (where `default_statistics_url` looks)."""
    root = tmp_path_factory.mktemp("local-generation")
    fitted = fit_everything(root, conditional=False)
    url = str(root / "model")
    save_posterior(fitted.posterior, default_statistics_url(url))
    return url


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("the local path started Ray")

    monkeypatch.setattr(job, "ensure_ray", refuse)


def config_for(model_url: str, output: Path, **generation: object) -> PipelineConfig:
    settings = {"rows": ROWS, "rows_per_shard": ROWS_PER_SHARD, "output_url": str(output), "num_workers": 1}
    overrides = {f"generation.{k}": v for k, v in {**settings, **generation}.items()}
    return PipelineConfig().with_overrides({"model_url": model_url, "sampler.name": "gaussian", **overrides})


def files_of(output: Path) -> dict[str, tuple[int, int]]:
    """Every file under the output with its size and modification time: what a write would change."""
    return {str(p.relative_to(output)): (p.stat().st_size, p.stat().st_mtime_ns) for p in output.rglob("*")}


@pytest.fixture()
def committed(model_url: str, tmp_path: Path) -> Path:
    output = tmp_path / "out"
    job.run_generation(config_for(model_url, output))
    return output


def test_one_worker_writes_every_shard_in_this_process_and_commits(committed: Path) -> None:
    manifest = read_manifest(str(committed))
    assert manifest is not None and manifest.rows == ROWS and len(manifest.shards) == 2
    assert manifest.extra["executor"] == "local"
    assert [w["shards"] for w in manifest.extra["workers"]] == [2]


def test_a_committed_rerun_with_resume_verifies_the_checksums_and_writes_nothing(
    model_url: str, committed: Path
) -> None:
    before, progress = files_of(committed), Recorder()
    job.run_generation(config_for(model_url, committed, resume=True), progress=progress)
    assert progress.summaries == [f"reused: {ROWS} rows in 2 shards (checksums verified)"]
    assert files_of(committed) == before  # no claim, no lease, no record


def test_a_damaged_shard_of_a_committed_run_is_rewritten_and_reported_repaired(model_url: str, committed: Path) -> None:
    damaged = committed / "part-00001.parquet"
    good, untouched = damaged.read_bytes(), (committed / "part-00000.parquet").stat().st_mtime_ns
    damaged.write_bytes(bytes(b ^ 0xFF for b in good))  # same size: only the checksum can tell
    manifest_before, progress = (committed / "_manifest.json").read_bytes(), Recorder()

    job.run_generation(config_for(model_url, committed, resume=True), progress=progress)
    assert damaged.read_bytes() == good
    assert (committed / "part-00000.parquet").stat().st_mtime_ns == untouched
    assert (committed / "_manifest.json").read_bytes() == manifest_before
    assert progress.advanced == 2 and len(progress.summaries) == 1
    assert progress.summaries[0].startswith("repaired: 1 of 2 shards rewritten (150 rows in 1 shard")


def test_a_local_run_that_stops_keeps_its_finished_shards_and_resume_finishes_them(
    model_url: str, committed: Path, tmp_path: Path
) -> None:
    output = tmp_path / "stopped"

    def stop_after_the_first(_record: object) -> None:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        job.run_generation(config_for(model_url, output), on_shard=stop_after_the_first)
    assert read_manifest(str(output)) is None
    assert read_claim(str(output)) is not None  # kept: one shard is done
    assert [p.name for p in (output / RECORDS_DIR).glob("*.json")] == ["part-00000.json"]

    job.run_generation(config_for(model_url, output, resume=True))
    for name in ("part-00000.parquet", "part-00001.parquet"):
        assert (output / name).read_bytes() == (committed / name).read_bytes()


def test_an_explicit_local_executor_with_two_workers_for_two_shards_is_refused_untouched(
    model_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    config = config_for(model_url, output, executor="local", num_workers=2)
    with pytest.raises(ConfigError) as refused:
        job.run_generation(config)
    message = str(refused.value)
    assert "\n" not in message
    assert "generation.num_workers is 2" in message and "generation.executor: ray" in message
    assert not output.exists()


def test_the_writer_threads_are_given_back() -> None:
    threads = torch.get_num_threads()
    with one_thread():  # what the local executor's writer runs under
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads


def test_a_one_shard_run_goes_local_with_the_default_two_workers(model_url: str, tmp_path: Path) -> None:
    config = config_for(model_url, tmp_path / "out", rows=ROWS_PER_SHARD).with_overrides({"generation.num_workers": 2})
    job.run_generation(config)
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest is not None and manifest.extra["executor"] == "local" and len(manifest.shards) == 1
