"""output.py: the output folder's claim, shard records, checksums, and who may write where."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pytest

from tests.unit.generation.test_manifest import make_manifest
from vae_pipeline import storage
from vae_pipeline.errors import OutputExistsError
from vae_pipeline.generation import output
from vae_pipeline.generation.manifest import write_manifest
from vae_pipeline.generation.writer import ShardRecord, write_shard

CONFIG: dict[str, Any] = {"seed": 1, "generation": {"rows": 10, "overwrite": False, "resume": False}}


@pytest.fixture
def url() -> str:
    return f"memory://output-tests/{uuid.uuid4().hex}"


def shard(url: str, index: int, rows: int = 3) -> ShardRecord:
    table = pa.table({"x": pa.array(range(rows), pa.float64())})
    return write_shard(table, url, index, f"part-{index:05d}.parquet")


def claim(run_id: str = "run-a", shards: int = 3, config: dict[str, Any] = CONFIG) -> output.RunClaim:
    return output.RunClaim(run_id=run_id, shards=shards, rows=9, config=config)


def test_a_shard_is_done_only_with_this_runs_record_and_an_intact_file(url: str) -> None:
    record = shard(url, 0)
    assert output.done_record(url, "run-a", record.name) is None  # written, but no record yet
    output.write_record(url, "run-a", record)
    assert output.done_record(url, "run-a", record.name) == record
    assert output.done_record(url, "run-b", record.name) is None  # another run's record


def test_a_corrupted_shard_of_the_same_size_is_not_intact(url: str) -> None:
    record = shard(url, 0)
    payload = bytearray(storage.read_bytes(storage.join_url(url, record.name)))
    payload[-20] ^= 0x01
    storage.atomic_write(storage.join_url(url, record.name), bytes(payload))
    assert output.shard_present(url, record, verify=False)
    assert not output.shard_intact(url, record)


def test_a_truncated_or_missing_shard_is_not_present(url: str) -> None:
    record = shard(url, 0)
    storage.atomic_write(storage.join_url(url, record.name), b"PAR1")
    assert not output.shard_present(url, record, verify=False)
    storage.remove(storage.join_url(url, record.name))
    assert not output.shard_present(url, record, verify=True)


def test_an_empty_output_is_claimed(url: str) -> None:
    output.claim_output(url, claim(), overwrite=False, resume=False)
    assert output.read_claim(url) == claim()


def test_an_unfinished_run_of_the_same_config_needs_resume(url: str) -> None:
    output.write_claim(url, claim())
    with pytest.raises(OutputExistsError, match=r"unfinished run of this same config.*--resume"):
        output.claim_output(url, claim(), overwrite=False, resume=False)
    with pytest.raises(OutputExistsError, match="--resume"):
        output.check_output_free(url, overwrite=False, resume=False, config=CONFIG)
    output.check_output_free(url, overwrite=False, resume=True, config=CONFIG)
    output.claim_output(url, claim(), overwrite=False, resume=True)


def test_another_runs_files_are_refused_and_kept_unless_overwrite(url: str) -> None:
    output.write_claim(url, claim("run-a"))
    record = shard(url, 0)
    output.write_record(url, "run-a", record)
    with pytest.raises(OutputExistsError, match=r"another run.*--overwrite"):
        output.claim_output(url, claim("run-b"), overwrite=False, resume=True)
    assert output.read_claim(url) == claim("run-a")
    assert output.done_record(url, "run-a", record.name) == record
    output.claim_output(url, claim("run-b"), overwrite=True, resume=False)
    assert output.read_claim(url) == claim("run-b")
    assert output.read_record(url, "run-a", record.name) is None  # the old run's records are withdrawn


def test_foreign_part_files_are_refused(url: str) -> None:
    shard(url, 0)
    with pytest.raises(OutputExistsError, match="1 part files"):
        output.check_output_free(url, overwrite=False, resume=True, config=CONFIG)
    with pytest.raises(OutputExistsError, match="another run"):
        output.claim_output(url, claim(), overwrite=False, resume=True)


def test_a_committed_run_of_the_same_config_is_free_and_volatile_settings_do_not_matter(url: str) -> None:
    write_manifest(url, make_manifest(config=CONFIG))
    resumed = {**CONFIG, "generation": {**CONFIG["generation"], "resume": True, "num_workers": 8}}
    output.check_output_free(url, overwrite=False, resume=False, config=resumed)
    other = {**CONFIG, "seed": 2}
    with pytest.raises(OutputExistsError, match="committed dataset of another run"):
        output.check_output_free(url, overwrite=False, resume=False, config=other)
    output.check_output_free(url, overwrite=True, resume=False, config=other)


def test_a_committed_run_with_damage_needs_resume(url: str) -> None:
    manifest = make_manifest(config=CONFIG)
    write_manifest(url, manifest)
    with pytest.raises(OutputExistsError, match=r"missing or damaged.*--resume"):
        output.claim_output(url, claim(manifest.run_id), overwrite=False, resume=False)
    output.claim_output(url, claim(manifest.run_id), overwrite=False, resume=True)


def test_strays_and_temporary_files_are_removed_and_the_plans_shards_kept(url: str) -> None:
    for index in range(3):
        shard(url, index)
    storage.atomic_write(storage.join_url(url, ".part-00001.parquet.abc.tmp"), b"partial")
    output.remove_strays(url, {"part-00000.parquet", "part-00001.parquet"})
    names = [u.rsplit("/", 1)[-1] for u in storage.list_urls(url)]
    assert names == ["part-00000.parquet", "part-00001.parquet"]


def test_a_run_that_finished_no_shard_leaves_no_claim(url: str) -> None:
    output.write_claim(url, claim())
    output.abandon_claim(url)
    assert output.read_claim(url) is None
    output.write_claim(url, claim())
    output.write_record(url, "run-a", shard(url, 0))
    output.abandon_claim(url)
    assert output.read_claim(url) is not None  # finished shards are kept for resume


def test_status_lists_done_and_missing_shards(url: str) -> None:
    output.write_claim(url, claim(shards=6))
    for index in (0, 1, 4):
        output.write_record(url, "run-a", shard(url, index))
    status = output.output_status(url)
    assert status["shards_done"] == 3
    assert status["shards_missing"] == "2-3, 5"
    assert output.output_status(f"{url}-nothing")["state"] == "empty"
