"""Writing one shard: Parquet bytes encoded in memory, then one atomic write (rename locally, one PUT remotely).

A shard is therefore visible whole or not at all, and its checksum is known before it lands.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vae_pipeline import storage

_ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class ShardRecord:
    """What the manifest says of one written shard."""

    index: int
    name: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardRecord:
        return cls(**data)


def encode_parquet(table: pa.Table) -> bytes:
    """Parquet bytes; dictionary encoding only for non-float columns (it makes float writes several times slower)."""
    dictionary_columns = [field.name for field in table.schema if not pa.types.is_floating(field.type)]
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=_ROW_GROUP_ROWS,
        compression="zstd",
        use_dictionary=dictionary_columns,
        write_statistics=True,
    )
    return sink.getvalue().to_pybytes()


def write_shard(table: pa.Table, output_url: str, index: int, name: str) -> ShardRecord:
    payload = encode_parquet(table)
    storage.atomic_write(storage.join_url(output_url, name), payload)
    return ShardRecord(
        index=index, name=name, rows=table.num_rows, bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest()
    )
