"""The seam between a long step and whoever shows its progress: the CLI's console, or nobody.

A step calls `start(step, total, unit)` when it begins, `advance(n, detail)` as units of work finish (epochs,
rows, candidates, shards) and `finish(summary)` with one line of key figures when it is done, also when it reuses
an earlier result. The library never draws anything itself: the CLI passes a console implementation (rich bars and
step lines, `vae_pipeline.console`), and every other caller (a flow on a schedule, a test, a step running on a Ray
cluster) gets `NO_PROGRESS`, which does nothing. Calls may come from a thread other than the one that called
`start` (training reports arrive on a polling thread), so implementations must be thread-safe.

This module imports nothing from the package, so every layer can report progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class Progress(Protocol):
    """Receives one step's progress at a time: start, any number of advances, then finish."""

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        """`step` begins; `total` units of work are expected (None: unknown).

        Called again for the step that is running, it only sets the total and unit: a step may learn its size
        after it began (after a cache check, or once Ray is up).
        """

    def advance(self, n: int = 1, detail: str = "") -> None:
        """`n` more units are done; `detail` is a short note on the latest one (an epoch's loss, a sampler's name)."""

    def finish(self, summary: str) -> None:
        """The step is done; `summary` is its key figures in one line ("30 epochs, best val loss 1.23 at epoch 27")."""


class NullProgress:
    """Reports nowhere: the default of every step."""

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        pass

    def advance(self, n: int = 1, detail: str = "") -> None:
        pass

    def finish(self, summary: str) -> None:
        pass


NO_PROGRESS: Progress = NullProgress()
# The reporter of the run in this context, for callers (Prefect tasks) that cannot take it as an argument. It lives
# here, in an importable module, because Prefect pickles flow modules by value to run them in a subprocess, and a
# context variable cannot be pickled.
_CURRENT: ContextVar[Progress] = ContextVar("vae_pipeline_progress", default=NO_PROGRESS)


def current_progress() -> Progress:
    """The progress reporter set by `reporting_to` in this context (the no-op one otherwise)."""
    return _CURRENT.get()


@contextmanager
def reporting_to(progress: Progress) -> Iterator[None]:
    """Within the block, `current_progress()` is `progress`."""
    token = _CURRENT.set(progress)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def is_silent(progress: Progress) -> bool:
    """True for `NO_PROGRESS`: a step may then skip the work of collecting progress (a reporting actor)."""
    return isinstance(progress, NullProgress)


def plural(count: int, noun: str) -> str:
    """`1 epoch`, `30 epochs`, `4,000 rows`: counts in step summaries."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
