"""The output folder's commit protocol: who owns it, which shards are done, and when the dataset is committed.

    _run.json              written first: the run id and plan of the run that owns the folder
    part-00000.parquet     shards, each visible whole or not at all (rename locally, one PUT on object stores)
    _shards/part-00000.json  a shard's record (rows, bytes, sha256), written right after the shard
    _manifest.json         written last: the commit
    _lease/                which driver is writing the folder right now (lease.py): a second one is refused

A shard counts as done only when its record belongs to this run and the file's checksum matches the record, so
a run interrupted at any point (worker, driver or machine gone) resumes by redoing exactly the missing or damaged
shards. Shards are deterministic, so a redone shard has the same bytes. Underscore and dot names are ignored by
pyarrow.dataset, pandas and Ray Data, which therefore read the shards alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from vae_pipeline import storage
from vae_pipeline.errors import OutputExistsError
from vae_pipeline.generation.lease import OutputLease, holder_of, refuse_if_held
from vae_pipeline.generation.manifest import manifest_url, read_manifest
from vae_pipeline.generation.plan import shard_name
from vae_pipeline.generation.writer import ShardRecord

logger = logging.getLogger(__name__)

RUN_FILE = "_run.json"
RECORDS_DIR = "_shards"
SHARD_PATTERN = "part-*.parquet"
# Volatile settings that may differ between an interrupted run and its resumption (every executor writes the same
# bytes, so a run begun on Ray may be finished in-process).
_VOLATILE_SETTINGS = ("overwrite", "resume", "num_workers", "executor", "privacy_guard")


@dataclass(frozen=True)
class RunClaim:
    """What `_run.json` says: the run that owns an output folder."""

    run_id: str
    shards: int
    rows: int
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "shards": self.shards, "rows": self.rows, "config": self.config}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunClaim:
        return cls(run_id=data["run_id"], shards=data["shards"], rows=data["rows"], config=data.get("config", {}))


def run_url(output_url: str) -> str:
    return storage.join_url(output_url, RUN_FILE)


def record_url(output_url: str, shard_name: str) -> str:
    return storage.join_url(output_url, RECORDS_DIR, shard_name.replace(".parquet", ".json"))


def read_claim(output_url: str) -> RunClaim | None:
    url = run_url(output_url)
    return RunClaim.from_json(storage.read_json(url)) if storage.exists(url) else None


def write_claim(output_url: str, claim: RunClaim) -> None:
    storage.write_json(run_url(output_url), claim.to_json())


def write_record(output_url: str, run_id: str, record: ShardRecord) -> None:
    """Mark a shard done; called after the shard file itself is in place."""
    storage.write_json(record_url(output_url, record.name), {"run_id": run_id, **record.to_json()})


def read_record(output_url: str, run_id: str, shard_name: str) -> ShardRecord | None:
    """The shard's record if this run wrote it, else None."""
    url = record_url(output_url, shard_name)
    if not storage.exists(url):
        return None
    data = storage.read_json(url)
    if data.pop("run_id", None) != run_id:
        return None
    return ShardRecord.from_json(data)


def shard_intact(output_url: str, record: ShardRecord) -> bool:
    """The shard file exists with the recorded size and checksum (a corrupted or truncated file is not intact)."""
    url = storage.join_url(output_url, record.name)
    if not storage.exists(url) or storage.size_of(url) != record.bytes:
        return False
    return storage.sha256_of(url) == record.sha256


def done_record(output_url: str, run_id: str, shard_name: str) -> ShardRecord | None:
    """The record of a shard this run already finished intact, or None when it must be (re)written."""
    record = read_record(output_url, run_id, shard_name)
    if record is None or not shard_intact(output_url, record):
        return None
    return record


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the settings that may change between a run and its resumption.

    The output's own URL is left out (the claim was found there, however it was spelled), and the model's and
    input's locations compare as places, not strings: `out//model`, `./out/model` and its absolute path are one.
    """
    generation = {k: v for k, v in config.get("generation", {}).items() if k not in (*_VOLATILE_SETTINGS, "output_url")}
    comparable = {**config, "generation": generation}
    if isinstance(config.get("model_url"), str):
        comparable["model_url"] = storage.location_key(config["model_url"])
    data = config.get("data", {})
    if isinstance(data.get("input_url"), str):
        comparable["data"] = {**data, "input_url": storage.location_key(data["input_url"])}
    return comparable


def check_output_free(output_url: str, overwrite: bool, resume: bool, config: dict[str, Any] | None = None) -> None:
    """Refuse an output that holds another run, unless overwrite.

    A committed run of the same config is fine (generation will find it complete); an unfinished one of the same
    config needs `resume`. Called before any work starts, when the run id is not known yet, so runs are compared
    by config; `claim_output` repeats the check by run id.

    Raises:
        OutputExistsError: another driver is writing the output (even with overwrite), or the output holds another
            run, or an unfinished one and resume is off.
    """
    refuse_if_held(output_url)
    if overwrite:
        return
    manifest, claim = read_manifest(output_url), read_claim(output_url)
    same = config is not None and comparable_config(config)
    if manifest is not None:
        if same and comparable_config(manifest.config) == same:
            return
        _refuse_other(output_url, "a committed dataset of another run")
    if claim is not None:
        if same and comparable_config(claim.config) == same:
            _require_resume(output_url, claim, resume)
            return
        _refuse_other(output_url, "an unfinished run of another config")
    parts = storage.list_urls(output_url, SHARD_PATTERN)
    if parts:
        _refuse_other(output_url, f"{len(parts)} part files")


def claim_output(
    output_url: str, claim: RunClaim, overwrite: bool, resume: bool, lease: OutputLease | None = None
) -> None:
    """Take the output for this run: its lease, then refuse or retract another run's files, then write `_run.json`.

    With overwrite, the old manifest, claim and records go first, so no reader trusts a mix of two runs. With a
    lease, the checks run once before it is taken (a refused run leaves no trace) and again under it, so two
    drivers never both decide the output is theirs; the caller releases it at the end.
    """
    if lease is not None:
        refuse_if_held(output_url)
        _must_retract(output_url, claim, overwrite, resume)
        lease.acquire()
    if _must_retract(output_url, claim, overwrite, resume):
        logger.warning("overwriting the run at %s", storage.redact_url(output_url))
        retract(output_url)
    write_claim(output_url, claim)


def _must_retract(output_url: str, claim: RunClaim, overwrite: bool, resume: bool) -> bool:
    """Raise if this run may not take the output; True when another run's files must go first (overwrite)."""
    manifest, current = read_manifest(output_url), read_claim(output_url)
    ours = current is not None and current.run_id == claim.run_id
    theirs = (manifest is not None and manifest.run_id != claim.run_id) or (current is not None and not ours)
    if theirs or (current is None and manifest is None and storage.list_urls(output_url, SHARD_PATTERN)):
        if not overwrite:
            _refuse_other(output_url, "another run")
        return True
    if ours and manifest is None:
        _require_resume(output_url, claim, resume or overwrite)
    elif manifest is not None and not resume and not overwrite:
        raise OutputExistsError(
            f"output {storage.redact_url(output_url)} holds this run but some shards are missing or damaged; "
            "pass --resume to rewrite them"
        )
    return False


def retract(output_url: str) -> None:
    """Withdraw whatever run is at the output: the commit first, then the claim and the shard records."""
    storage.remove(manifest_url(output_url))
    storage.remove(run_url(output_url))
    storage.remove(storage.join_url(output_url, RECORDS_DIR))


def remove_strays(output_url: str, keep: set[str]) -> None:
    """Part files no shard of this run names (an overwritten run's), and temporary files of killed writers."""
    for url in storage.list_urls(output_url, SHARD_PATTERN):
        if url.rsplit("/", 1)[-1] not in keep:
            storage.remove(url)
    for url in storage.list_urls(output_url, ".part-*.tmp"):
        storage.remove(url)


def abandon_claim(output_url: str) -> None:
    """A run that failed before finishing any shard leaves nothing behind, so a rerun starts clean."""
    if not storage.list_urls(storage.join_url(output_url, RECORDS_DIR), "*.json"):
        storage.remove(run_url(output_url))


def output_status(output_url: str, verify: bool = False) -> dict[str, Any]:
    """Which run owns the output and which of its shards exist: what `vae-pipeline inspect` shows."""
    status, holder = _status(output_url, verify), holder_of(output_url)
    if holder is not None:
        status["writing"] = f"a driver is writing it now ({holder.describe(time.time())})"
    return status


def _status(output_url: str, verify: bool) -> dict[str, Any]:
    manifest, claim = read_manifest(output_url), read_claim(output_url)
    if manifest is not None:
        names = [s.name for s in manifest.shards]
        damaged = [s.name for s in manifest.shards if not shard_present(output_url, s, verify)]
        return {
            "state": "committed" if not damaged else "committed, damaged (run generate --resume)",
            "run_id": manifest.run_id,
            "shards": len(names),
            "shards_missing_or_damaged": damaged,
        }
    if claim is not None:
        present = [i for i in range(claim.shards) if _done(output_url, claim.run_id, i, verify)]
        missing = sorted(set(range(claim.shards)) - set(present))
        return {
            "state": "unfinished (run generate --resume to finish)",
            "run_id": claim.run_id,
            "shards": claim.shards,
            "shards_done": len(present),
            "shards_missing": _ranges(missing),
        }
    return {"state": "empty", "part_files": len(storage.list_urls(output_url, SHARD_PATTERN))}


def shard_present(output_url: str, record: ShardRecord, verify: bool) -> bool:
    """The shard is there with its recorded size; with verify, its checksum matches too."""
    if verify:
        return shard_intact(output_url, record)
    url = storage.join_url(output_url, record.name)
    return storage.exists(url) and storage.size_of(url) == record.bytes


def _done(output_url: str, run_id: str, index: int, verify: bool) -> bool:
    record = read_record(output_url, run_id, shard_name(index))
    return record is not None and shard_present(output_url, record, verify)


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5": a compact list of shard indices."""
    spans: list[str] = []
    for index in indices:
        if spans and spans[-1].split("-")[-1] == str(index - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{index}"
        else:
            spans.append(str(index))
    return ", ".join(spans)


def _require_resume(output_url: str, claim: RunClaim, resume: bool) -> None:
    if resume:
        return
    raise OutputExistsError(
        f"output {storage.redact_url(output_url)} holds an unfinished run of this same config "
        f"({claim.shards} shards planned); pass --resume to finish it or --overwrite to start again"
    )


def _refuse_other(output_url: str, what: str) -> None:
    raise OutputExistsError(
        f"output {storage.redact_url(output_url)} already holds {what}; "
        "pass --overwrite to replace it or choose another --output"
    )
