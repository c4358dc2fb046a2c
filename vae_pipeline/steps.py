"""Step records: what each finished step was computed from, so a rerun on unchanged inputs costs nothing.

Every step writes `_step.json` beside its artifact after the artifact itself: the step's key (a hash of
everything that decides the artifact: input files, config, upstream fingerprints), when it finished, how long it
took and its peak memory. A later run with the same key finds the record, checks the artifact is still the one
recorded, and skips the step. The records live with the artifacts rather than in Prefect's result storage, so the
cache works the same from the CLI, the flow and a Ray Job, on any storage, and disappears with the artifact.
"""

from __future__ import annotations

import hashlib
import logging
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vae_pipeline import storage

logger = logging.getLogger(__name__)

STEP_FILE = "_step.json"
# What fsspec's info() calls a file's version, by backend: an ETag or hash where the store has one, else a time.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "content_md5", "mtime", "LastModified", "last_modified", "updated")


def input_stamp(filesystem: Any, files: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Each input file's path, size and version (ETag or modification time): changes when the data changes."""
    stamps = []
    for path in sorted(files):
        info = filesystem.info(path)
        version = next((str(info[key]) for key in _VERSION_KEYS if info.get(key) is not None), "")
        stamps.append({"path": path, "size": int(info.get("size") or 0), "version": version})
    return stamps


def step_key(step: str, **parts: Any) -> str:
    """A hash of everything that decides a step's artifact."""
    payload = storage.canonical_json({"step": step, **parts})
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class StepRecord:
    step: str
    key: str
    artifact: str  # the artifact's own fingerprint or digest, checked again before a cached result is trusted
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    finished_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "key": self.key,
            "artifact": self.artifact,
            "seconds": self.seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "finished_at": self.finished_at,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**data)


def read_record(url: str) -> StepRecord | None:
    record_url = storage.join_url(url, STEP_FILE)
    if not storage.exists(record_url):
        return None
    try:
        return StepRecord.from_json(storage.read_json(record_url))
    except (TypeError, KeyError):
        return None  # an unreadable record only costs a recomputation


def cached_record(url: str, step: str, key: str, artifact: str | None) -> StepRecord | None:
    """The record of a finished step with this key whose artifact is still the one recorded, else None."""
    record = read_record(url)
    if record is None or record.step != step or record.key != key or artifact is None:
        return None
    if record.artifact != artifact:
        return None
    logger.info("%s: inputs and config unchanged since %s; reusing %s", step, record.finished_at, url)
    return record


def reused_json(url: str, step: str, key: str, artifact_url: str) -> Any | None:
    """The JSON artifact at `artifact_url` when `step`'s record under `url` has this key and still names that
    artifact's content; None when the step has work to do."""
    if cached_record(url, step, key, file_digest(artifact_url)) is None:
        return None
    return storage.read_json(artifact_url)


def file_digest(url: str) -> str | None:
    """A small artifact file's sha256, or None when it is missing: what a record of a JSON artifact checks."""
    return storage.sha256_of(url) if storage.exists(url) else None


def history(urls: dict[str, str]) -> list[dict[str, Any]]:
    """The records of the given steps ({step: artifact URL}) that exist: when, how long, peak memory."""
    found = []
    for step, url in urls.items():
        record = read_record(url)
        if record is not None:
            entry = {k: v for k, v in record.to_json().items() if k not in ("key", "artifact")}
            found.append({**entry, "step": step, "url": storage.redact_url(url)})
    return found


def write_record(url: str, record: StepRecord) -> None:
    storage.write_json(storage.join_url(url, STEP_FILE), record.to_json())


@dataclass
class StepClock:
    """Wall time of a step, filled in when the `timed` block ends."""

    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[StepClock]:
    clock = StepClock()
    yield clock
    clock.seconds = round(time.perf_counter() - clock.started, 3)


def finished_record(step: str, key: str, artifact: str, seconds: float, **details: Any) -> StepRecord:
    return StepRecord(
        step=step,
        key=key,
        artifact=artifact,
        seconds=seconds,
        peak_rss_bytes=peak_rss_bytes(),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        details=details,
    )


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes
