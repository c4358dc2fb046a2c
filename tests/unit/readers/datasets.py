"""Small committed datasets written by hand (the real writer and manifest, no Ray), shared by the reader tests.

Row i of a dataset has id i, so a test can tell exactly which rows a consumer read and in what order.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from vae_pipeline.generation.manifest import Manifest, schema_json, write_manifest
from vae_pipeline.generation.plan import shard_name
from vae_pipeline.generation.writer import ShardRecord, write_shard

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("f32", pa.float32()),
        pa.field("count", pa.int64()),
        pa.field("flag", pa.bool_()),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("kind", pa.dictionary(pa.int32(), pa.string())),
    ]
)
COLUMNS = SCHEMA.names


def make_table(ids: Sequence[int]) -> pa.Table:
    """Rows with the given ids; every column but id and ok has a null at ids divisible by 7."""
    null = [i % 7 == 0 for i in ids]
    return pa.table(
        {
            "id": ids,
            "name": [None if n else f"r{i}" for i, n in zip(ids, null, strict=True)],
            "score": [None if n else i / 2 for i, n in zip(ids, null, strict=True)],
            "f32": [float(i) for i in ids],
            "count": [None if n else 10 * i for i, n in zip(ids, null, strict=True)],
            "flag": [None if n else i % 2 == 0 for i, n in zip(ids, null, strict=True)],
            "ok": [i % 3 == 0 for i in ids],
            "kind": pa.array([None if n else "abc"[i % 3] for i, n in zip(ids, null, strict=True)]).dictionary_encode(),
        },
        schema=SCHEMA,
    )


def write_dataset(url: str, sizes: Sequence[int]) -> Manifest:
    """Shards of `sizes` rows (ids counting up across them) and the manifest that commits them."""
    records: list[ShardRecord] = []
    first = 0
    for index, rows in enumerate(sizes):
        records.append(write_shard(make_table(range(first, first + rows)), url, index, shard_name(index)))
        first += rows
    manifest = Manifest(
        run_id="test-run",
        rows=first,
        shards=records,
        schema=schema_json(SCHEMA),
        bundle_fingerprint="f" * 64,
        model_url="memory://model",
        statistics_url="memory://model/statistics",
        sampler={"name": "gaussian"},
        seed=0,
        rows_per_shard=max(sizes),
        config={},
    )
    write_manifest(url, manifest)
    return manifest
