"""Logging with the run and the step on every line: plain text for people, JSON lines for log pipelines.

`log_context(run_id=..., step=...)` sets the fields for everything logged inside it (context variables, so
threads and async tasks keep their own); `configure_logging` installs the filter and picks the format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_RUN_ID: ContextVar[str] = ContextVar("vae_pipeline_run_id", default="-")
_STEP: ContextVar[str] = ContextVar("vae_pipeline_step", default="-")
_NOISY = ("ray", "prefect", "httpx", "filelock", "urllib3", "botocore", "aiobotocore", "s3fs")


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
        handler.setFormatter(logging.Formatter("%(levelname)s [%(run_id)s %(step)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
