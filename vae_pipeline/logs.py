"""Logging with the run and the step on every line: plain text for people, JSON lines for log pipelines.

`log_context(run_id=..., step=...)` sets the fields for everything logged inside it (context variables, so
threads and async tasks keep their own); `configure_logging` installs the filter and picks the format.

A quiet console (the CLI's default) sends everything that is not the CLI's own output to a log file: `divert_output`
points the process's stdout and stderr file descriptors at the file, so the C++ core worker's warnings, the lines
Ray's workers stream to the driver, Prefect's handlers, Python warnings and tracebacks, and the subprocesses started
from here (Ray's, Prefect's temporary server) all land there, and hands back streams on the original terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TextIO

from vae_pipeline import storage

_RUN_ID: ContextVar[str] = ContextVar("vae_pipeline_run_id", default="-")
_STEP: ContextVar[str] = ContextVar("vae_pipeline_step", default="-")
_NOISY = ("ray", "prefect", "httpx", "filelock", "urllib3", "botocore", "aiobotocore", "s3fs")
TEXT_FORMAT = "%(levelname)s [%(run_id)s %(step)s] %(name)s: %(message)s"
LOG_DIR = "logs"  # beside a local model bundle
FALLBACK_LOG_DIR = Path(".vae-pipeline") / "logs"  # under the working directory, for a remote or read-only model


@contextmanager
def log_context(*, run_id: str | None = None, step: str | None = None) -> Iterator[None]:
    tokens = []
    if run_id is not None:
        tokens.append((_RUN_ID, _RUN_ID.set(run_id)))
    if step is not None:
        tokens.append((_STEP, _STEP.set(step)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """Puts the current run id and step on every record (as `record.run_id`, `record.step`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _RUN_ID.get()
        record.step = _STEP.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, run_id, step, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "run_id": getattr(record, "run_id", "-"),
            "step": getattr(record, "step", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Root logging for the CLI and the flows: `text` (default) or `json`."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_file_for(model_url: str, command: str, now: datetime | None = None) -> Path:
    """Where one command's log goes: a `logs/` folder beside the model bundle when the model is local, else
    `.vae-pipeline/logs/` in the working directory (a log grows line by line, which object stores cannot do).

    Beside, not inside: a run that fails before training leaves its log but no half-made bundle folder. The name
    carries the model's folder name, the time, the command and the process id, so concurrent commands never share
    a file: `out/logs/model-20260101-120000-run-4242.log` for the model `out/model`.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    model = PurePosixPath(model_url.split("://", 1)[-1].rstrip("/"))
    name = f"{model.name or 'model'}-{stamp}-{command}-{os.getpid()}.log"
    if storage.is_local(model_url):
        beside = Path(str(model.parent)) / LOG_DIR
        try:
            beside.mkdir(parents=True, exist_ok=True)
            if os.access(beside, os.W_OK):
                return beside.resolve() / name
        except OSError:
            pass  # a model we may read but not write beside (a shared bundle): fall back to the working directory
    FALLBACK_LOG_DIR.mkdir(parents=True, exist_ok=True)
    return FALLBACK_LOG_DIR.resolve() / name


@dataclass
class Diverted:
    """Streams on the terminal's stdout and stderr as they were before `divert_output`, and the log file."""

    stdout: TextIO
    stderr: TextIO
    path: Path
    _saved: tuple[int, int]

    def restore(self) -> None:
        """Point file descriptors 1 and 2 back at the terminal (a process that goes on after the command)."""
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)


def divert_output(path: Path) -> Diverted:
    """Append everything written to this process's stdout and stderr, from Python or not, to `path` from now on.

    Returns streams on the original stdout and stderr, for the console. Root logging gets a timestamp, as a file
    has no other clock. Subprocesses started afterwards inherit the file as their stdout and stderr.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
    finally:
        os.close(target)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(logging.Formatter("%(asctime)s " + TEXT_FORMAT))
    return Diverted(stdout=out, stderr=err, path=path, _saved=saved)
