"""The manifest: written last, it is the commit of a synthetic dataset.

A reader that trusts `_manifest.json` sees exactly the listed shards, with their row counts and checksums, and
knows which model, statistics, sampler and seed produced them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vae_pipeline import storage
from vae_pipeline.errors import ArtifactMismatchError
from vae_pipeline.generation.writer import ShardRecord

MANIFEST_FILE = "_manifest.json"
MANIFEST_FORMAT = "vae-pipeline/manifest/v1"
# Raise it with any change that alters the rows a given model, statistics, sampler, seed and device produce.
GENERATOR_VERSION = 2


@dataclass
class Manifest:
    run_id: str
    rows: int
    shards: list[ShardRecord]
    schema: list[dict[str, Any]]
    bundle_fingerprint: str
    model_url: str
    statistics_url: str
    sampler: dict[str, Any]
    seed: int
    rows_per_shard: int
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "run_id": self.run_id,
            "rows": self.rows,
            "bytes": self.bytes,
            "shards": [shard.to_json() for shard in sorted(self.shards, key=lambda s: s.index)],
            "schema": self.schema,
            "bundle_fingerprint": self.bundle_fingerprint,
            "model_url": self.model_url,
            "statistics_url": self.statistics_url,
            "sampler": self.sampler,
            "seed": self.seed,
            "rows_per_shard": self.rows_per_shard,
            "config": self.config,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        known = {
            "format",
            "bytes",
            "run_id",
            "rows",
            "shards",
            "schema",
            "bundle_fingerprint",
            "model_url",
            "statistics_url",
            "sampler",
            "seed",
            "rows_per_shard",
            "config",
        }
        return cls(
            run_id=data["run_id"],
            rows=data["rows"],
            shards=[ShardRecord.from_json(s) for s in data["shards"]],
            schema=data["schema"],
            bundle_fingerprint=data["bundle_fingerprint"],
            model_url=data["model_url"],
            statistics_url=data["statistics_url"],
            sampler=data["sampler"],
            seed=data["seed"],
            rows_per_shard=data["rows_per_shard"],
            config=data["config"],
            extra={k: v for k, v in data.items() if k not in known},
        )

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "rows": self.rows,
            "shards": len(self.shards),
            "bytes": self.bytes,
            "sampler": self.sampler,
            "seed": self.seed,
            "bundle_fingerprint": self.bundle_fingerprint,
            "model_url": self.model_url,
            "columns": [f"{c['name']}: {c['type']}" for c in self.schema],
        }


def generation_run_id(
    *,
    bundle_fingerprint: str,
    statistics_digest: str,
    sampler: dict[str, Any],
    seed: int,
    rows: int,
    rows_per_shard: int,
    batch_rows: int,
    device: str = "cpu",
    generator_version: int = GENERATOR_VERSION,
    extra: dict[str, Any] | None = None,
    sampler_state: str | None = None,
) -> str:
    """Identity of a generation run: everything that decides the bytes; two runs with equal ids write equal shards.

    The device type is part of it (a GPU draws other random streams than a CPU), and so is the generator's version,
    so a run resumed with code that writes other bytes starts afresh instead of mixing shards of both.
    """
    payload = {
        "generator": generator_version,
        "device": device,
        "bundle": bundle_fingerprint,
        "statistics": statistics_digest,
        "sampler": sampler,
        "seed": seed,
        "rows": rows,
        "rows_per_shard": rows_per_shard,
        "batch_rows": batch_rows,
    }
    if extra is not None:  # an augmented run's classes and input; absent, a plain run keeps the id it had
        payload["extra"] = extra
    if sampler_state is not None:  # a learned prior's weights: retrained weights make a new run
        payload["sampler_state"] = sampler_state
    return hashlib.sha256(storage.canonical_json(payload).encode()).hexdigest()[:16]


def schema_json(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def manifest_url(output_url: str) -> str:
    return storage.join_url(output_url, MANIFEST_FILE)


def read_manifest(output_url: str) -> Manifest | None:
    url = manifest_url(output_url)
    if not storage.exists(url):
        return None
    data = storage.read_json(url)
    if data.get("format") != MANIFEST_FORMAT:
        raise ArtifactMismatchError(
            f"{storage.redact_url(url)} has format {data.get('format')!r}, and this vae-pipeline reads "
            f"{MANIFEST_FORMAT!r}; read it with the version that wrote it, or regenerate with --overwrite"
        )
    return Manifest.from_json(data)


def write_manifest(output_url: str, manifest: Manifest) -> str:
    url = manifest_url(output_url)
    storage.write_json(url, manifest.to_json())
    return url
