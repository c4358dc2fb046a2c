"""shards.py: any row range of a shard with several row groups, exact columns, checks against the record."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_pipeline import storage
from vae_pipeline.errors import DataError
from vae_pipeline.generation.writer import ShardRecord
from vae_pipeline.readers.shards import read_range

ROWS = 10


@pytest.fixture(scope="module")
def shard() -> Iterator[tuple[str, ShardRecord]]:
    """Ten rows in row groups of 3, 3, 3 and 1 (the writer's groups are 65,536 rows: too big for a unit test)."""
    table = pa.table({"id": range(ROWS), "name": [f"r{i}" for i in range(ROWS)], "x": [i / 4 for i in range(ROWS)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=3)
    payload = sink.getvalue().to_pybytes()
    url = f"memory://readers-test/{uuid.uuid4().hex}/part-00000.parquet"
    storage.atomic_write(url, payload)
    assert pq.ParquetFile(pa.BufferReader(payload)).metadata.num_row_groups == 4
    yield url, ShardRecord(0, "part-00000.parquet", ROWS, len(payload), hashlib.sha256(payload).hexdigest())
    storage.remove(url)


@pytest.mark.parametrize("verify", [False, True])
def test_every_range_reads_exactly_its_rows(shard: tuple[str, ShardRecord], verify: bool) -> None:
    url, record = shard
    for start in range(ROWS + 1):
        for stop in range(start, ROWS + 1):
            parts = list(
                read_range(url, record, start, stop, columns=["name", "id"], read_rows=2, verify_checksum=verify)
            )
            assert all(part.num_rows <= 2 and part.column_names == ["name", "id"] for part in parts)
            assert [i for part in parts for i in part.column("id").to_pylist()] == list(range(start, stop))


def test_a_wrong_checksum_names_the_shard(shard: tuple[str, ShardRecord]) -> None:
    url, record = shard
    wrong = ShardRecord(record.index, record.name, record.rows, record.bytes, "0" * 64)
    assert len(list(read_range(url, wrong, 0, 3, columns=["id"], read_rows=8))) == 1  # not checked unless asked
    with pytest.raises(DataError, match=r"shard part-00000.parquet at .* but the manifest lists 0000000000000000"):
        list(read_range(url, wrong, 0, 3, columns=["id"], read_rows=8, verify_checksum=True))
