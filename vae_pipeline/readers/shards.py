"""Reading a row range of one shard as a stream of Arrow tables, checked against what the manifest says of it.

Only the row groups that overlap the range are decoded, `read_rows` rows at a time, so memory holds one decoded
batch, not the shard. With checksum verification the shard's bytes are read whole (the hash needs all of them)
and decoded from memory, so a shard is never read twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from vae_pipeline import storage
from vae_pipeline.errors import DataError
from vae_pipeline.generation.writer import ShardRecord

_RESUME_HINT = "run `vae-pipeline generate --resume` with the same config to rewrite damaged shards"


def read_range(
    url: str,
    record: ShardRecord,
    start: int,
    stop: int,
    *,
    columns: Sequence[str],
    read_rows: int,
    verify_checksum: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[pa.Table]:
    """Rows [start, stop) of the shard at `url`, as tables of at most `read_rows` rows with exactly `columns`.

    Raises:
        DataError: the shard's sha256 (when verified) or row count differs from its manifest record.
        StorageError: the shard cannot be read.
    """
    if verify_checksum:
        payload = storage.read_bytes(url, storage_options)
        _check_checksum(url, record, payload)
        yield from _read_parquet(pa.BufferReader(payload), url, record, start, stop, columns, read_rows)
        return
    with storage.open_url(url, "rb", storage_options) as handle:
        yield from _read_parquet(handle, url, record, start, stop, columns, read_rows)


def _check_checksum(url: str, record: ShardRecord, payload: bytes) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    if digest != record.sha256:
        raise DataError(
            f"shard {record.name} at {storage.redact_url(url)} has sha256 {digest[:16]}..., but the manifest "
            f"lists {record.sha256[:16]}...; {_RESUME_HINT}"
        )


def _read_parquet(
    source: IO[Any] | pa.BufferReader,
    url: str,
    record: ShardRecord,
    start: int,
    stop: int,
    columns: Sequence[str],
    read_rows: int,
) -> Iterator[pa.Table]:
    parquet = pq.ParquetFile(source)
    if parquet.metadata.num_rows != record.rows:
        raise DataError(
            f"shard {record.name} at {storage.redact_url(url)} has {parquet.metadata.num_rows} rows, but the "
            f"manifest lists {record.rows}; {_RESUME_HINT}"
        )
    groups, position = _overlapping_row_groups(parquet.metadata, start, stop)
    if not groups:
        return
    for batch in parquet.iter_batches(batch_size=read_rows, row_groups=groups, columns=list(columns)):
        batch_start, position = position, position + batch.num_rows
        low, high = max(start, batch_start), min(stop, position)
        if low < high:
            yield pa.Table.from_batches([batch.slice(low - batch_start, high - low)]).select(list(columns))
        if position >= stop:
            break


def _overlapping_row_groups(metadata: pq.FileMetaData, start: int, stop: int) -> tuple[list[int], int]:
    """The row groups holding rows [start, stop), and the shard row at which the first of them begins."""
    groups: list[int] = []
    first_row = 0
    offset = 0
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if offset < stop and offset + rows > start:
            if not groups:
                first_row = offset
            groups.append(index)
        offset += rows
    return groups, first_row
