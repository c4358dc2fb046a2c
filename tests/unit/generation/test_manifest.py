"""manifest.py: JSON round trips, the run id's identity, reading and writing `_manifest.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from vae_pipeline.errors import ArtifactMismatchError
from vae_pipeline.generation.manifest import (
    GENERATOR_VERSION,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    Manifest,
    generation_run_id,
    manifest_url,
    read_manifest,
    schema_json,
    write_manifest,
)
from vae_pipeline.generation.writer import ShardRecord

RUN_ARGS: dict[str, Any] = {
    "bundle_fingerprint": "f" * 64,
    "statistics_digest": "d" * 64,
    "sampler": {"name": "gaussian", "temperature": 1.0},
    "seed": 0,
    "rows": 5,
    "rows_per_shard": 2,
    "batch_rows": 4096,
}


def make_manifest(**changes: Any) -> Manifest:
    shards = [
        ShardRecord(index=2, name="part-00002.parquet", rows=1, bytes=300, sha256="c" * 64),
        ShardRecord(index=0, name="part-00000.parquet", rows=2, bytes=500, sha256="a" * 64),
        ShardRecord(index=1, name="part-00001.parquet", rows=2, bytes=510, sha256="b" * 64),
    ]
    values: dict[str, Any] = {
        "run_id": generation_run_id(**RUN_ARGS),
        "rows": 5,
        "shards": shards,
        "schema": schema_json(pa.schema([("species", pa.string()), ("mass", pa.int64())])),
        "bundle_fingerprint": "f" * 64,
        "model_url": "memory://model",
        "statistics_url": "memory://model/statistics",
        "sampler": {"name": "gaussian", "temperature": 1.0},
        "seed": 0,
        "rows_per_shard": 2,
        "config": {"generation": {"rows": 5}},
    }
    values.update(changes)
    return Manifest(**values)


def test_to_json_exact() -> None:
    data = make_manifest().to_json()
    assert data["format"] == MANIFEST_FORMAT
    assert data["bytes"] == 300 + 500 + 510
    assert [s["index"] for s in data["shards"]] == [0, 1, 2]  # sorted by index
    assert data["schema"] == [
        {"name": "species", "type": "string", "nullable": True},
        {"name": "mass", "type": "int64", "nullable": True},
    ]
    json.dumps(data, allow_nan=False)  # JSON-serialisable as is


def test_json_round_trip() -> None:
    manifest = make_manifest(extra={"started_at": "2026-01-01T00:00:00Z", "seconds": 1.5})
    back = Manifest.from_json(manifest.to_json())
    assert back.to_json() == manifest.to_json()
    assert back.extra == {"started_at": "2026-01-01T00:00:00Z", "seconds": 1.5}
    assert sorted(back.shards, key=lambda s: s.index) == sorted(manifest.shards, key=lambda s: s.index)
    assert back.bytes == manifest.bytes


def test_summary() -> None:
    summary = make_manifest().summary()
    assert summary["shards"] == 3
    assert summary["rows"] == 5
    assert summary["bytes"] == 1310
    assert summary["columns"] == ["species: string", "mass: int64"]


def test_run_id_stable() -> None:
    assert generation_run_id(**RUN_ARGS) == generation_run_id(**dict(RUN_ARGS))
    assert len(generation_run_id(**RUN_ARGS)) == 16
    # Key order of the sampler dict does not matter (canonical JSON).
    reordered = {**RUN_ARGS, "sampler": {"temperature": 1.0, "name": "gaussian"}}
    assert generation_run_id(**reordered) == generation_run_id(**RUN_ARGS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bundle_fingerprint", "e" * 64),
        ("sampler", {"name": "gaussian", "temperature": 0.5}),
        ("sampler", {"name": "gmm", "temperature": 1.0}),
        ("seed", 1),
        ("rows", 6),
        ("rows_per_shard", 3),
        ("statistics_digest", "c" * 64),
        ("batch_rows", 1024),
        ("device", "cuda"),
        ("generator_version", GENERATOR_VERSION - 1),
    ],
)
def test_run_id_sensitive_to_each_input(field: str, value: Any) -> None:
    assert generation_run_id(**{**RUN_ARGS, field: value}) != generation_run_id(**RUN_ARGS)


def test_run_id_defaults_to_a_cpu_run_of_this_generator() -> None:
    explicit = generation_run_id(**RUN_ARGS, device="cpu", generator_version=GENERATOR_VERSION)
    assert explicit == generation_run_id(**RUN_ARGS)


def test_schema_json() -> None:
    schema = pa.schema([pa.field("a", pa.float64(), nullable=False), pa.field("t", pa.timestamp("us", tz="UTC"))])
    assert schema_json(schema) == [
        {"name": "a", "type": "double", "nullable": False},
        {"name": "t", "type": "timestamp[us, tz=UTC]", "nullable": True},
    ]


def test_manifest_url() -> None:
    assert manifest_url("s3://b/out/") == "s3://b/out/_manifest.json"
    assert MANIFEST_FILE == "_manifest.json"


def test_read_manifest_missing_is_none(tmp_path: Path) -> None:
    assert read_manifest(str(tmp_path)) is None
    assert read_manifest(str(tmp_path / "not-there")) is None


def test_write_then_read(tmp_path: Path) -> None:
    manifest = make_manifest()
    url = write_manifest(str(tmp_path / "out"), manifest)
    assert url == str(tmp_path / "out" / "_manifest.json")
    back = read_manifest(str(tmp_path / "out"))
    assert back is not None
    assert back.to_json() == manifest.to_json()
    # Written canonically: rewriting the same manifest gives the same bytes.
    first = (tmp_path / "out" / "_manifest.json").read_bytes()
    write_manifest(str(tmp_path / "out"), back)
    assert (tmp_path / "out" / "_manifest.json").read_bytes() == first


@pytest.mark.parametrize("format_", ["vae-pipeline/manifest/v2", None])
def test_a_manifest_of_another_format_is_refused_by_name(tmp_path: Path, format_: str | None) -> None:
    data = make_manifest().to_json()
    data["format"] = format_
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactMismatchError, match=f"has format {format_!r}, and this vae-pipeline reads"):
        read_manifest(str(tmp_path))
    assert MANIFEST_FORMAT in json.dumps(make_manifest().to_json())
