"""writer.py: deterministic Parquet encoding, exact round trips, shard records that match the written file."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_pipeline.generation.writer import ShardRecord, encode_parquet, write_shard


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """Seeded, 50 rows, the types the generator writes (with nulls)."""
    rng = np.random.default_rng(0)
    n = 50
    return pa.table(
        {
            "species": pa.array([None if i % 9 == 0 else ["Adelie", "Gentoo"][i % 2] for i in range(n)]),
            "bill": pa.array(rng.normal(40, 5, n)),
            "mass": pa.array([None if i % 11 == 0 else int(v) for i, v in enumerate(rng.integers(3000, 6000, n))]),
            "f32": pa.array(rng.normal(size=n).astype(np.float32)),
            "flag": pa.array(rng.random(n) < 0.5),
            "day": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 99, n)]),
            "coded": pa.array([["a", "b", "c"][i % 3] for i in range(n)]).dictionary_encode(),
        }
    )


def test_encode_parquet_deterministic(table: pa.Table) -> None:
    assert encode_parquet(table) == encode_parquet(table)


def test_encode_parquet_same_content_same_bytes(table: pa.Table) -> None:
    """Chunking is not content: a table split into chunks encodes like the combined one."""
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=7))
    assert encode_parquet(rechunked) == encode_parquet(table)


def test_encode_parquet_round_trip(table: pa.Table) -> None:
    back = pq.read_table(io.BytesIO(encode_parquet(table)))
    assert back.schema.equals(table.schema)
    assert back.equals(table)


def test_encode_parquet_empty_table(table: pa.Table) -> None:
    back = pq.read_table(io.BytesIO(encode_parquet(table.slice(0, 0))))
    assert back.num_rows == 0
    assert back.schema.equals(table.schema)


def test_encode_parquet_uses_zstd_and_dictionary_only_for_non_floats(table: pa.Table) -> None:
    meta = pq.ParquetFile(io.BytesIO(encode_parquet(table))).metadata
    assert meta.num_rows == 50
    group = meta.row_group(0)
    by_name = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert {c.compression for c in by_name.values()} == {"ZSTD"}
    assert "RLE_DICTIONARY" not in by_name["bill"].encodings
    assert "RLE_DICTIONARY" not in by_name["f32"].encodings
    assert "RLE_DICTIONARY" in by_name["species"].encodings


def test_write_shard_record_matches_file(tmp_path: Path, table: pa.Table) -> None:
    record = write_shard(table, str(tmp_path / "out"), index=3, name="part-00003.parquet")
    path = tmp_path / "out" / "part-00003.parquet"
    payload = path.read_bytes()

    assert record == ShardRecord(
        index=3, name="part-00003.parquet", rows=50, bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest()
    )
    assert payload == encode_parquet(table)
    assert pq.read_table(path).equals(table)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00003.parquet"]  # no temp file


def test_write_shard_twice_same_record(tmp_path: Path, table: pa.Table) -> None:
    first = write_shard(table, str(tmp_path), 0, "part-00000.parquet")
    second = write_shard(table, str(tmp_path), 0, "part-00000.parquet")
    assert first == second


def test_shard_record_json_round_trip() -> None:
    record = ShardRecord(index=1, name="part-00001.parquet", rows=10, bytes=999, sha256="ab" * 32)
    assert record.to_json() == {
        "index": 1,
        "name": "part-00001.parquet",
        "rows": 10,
        "bytes": 999,
        "sha256": "ab" * 32,
    }
    assert ShardRecord.from_json(record.to_json()) == record
