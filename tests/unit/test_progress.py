"""The progress seam: the no-op default, each step's one-line key figures, and the driver's epoch-report reader."""

from __future__ import annotations

import math
import queue
import threading
from typing import Any

import pytest
from ray.util.queue import Empty

from vae_pipeline.evaluation.job import evaluation_summary
from vae_pipeline.generation.job import generation_summary
from vae_pipeline.posterior.job import statistics_summary
from vae_pipeline.progress import NO_PROGRESS, NullProgress, is_silent, plural
from vae_pipeline.training.epoch_reports import EpochReports
from vae_pipeline.training.job import training_summary


class RecordingProgress:
    """Every call, in order, as (method, args...)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        with self.lock:
            self.calls.append(("start", step, total, unit))

    def advance(self, n: int = 1, detail: str = "") -> None:
        with self.lock:
            self.calls.append(("advance", n, detail))

    def finish(self, summary: str) -> None:
        with self.lock:
            self.calls.append(("finish", summary))


def test_the_default_reports_nowhere_and_says_so() -> None:
    NO_PROGRESS.start("train", 3, "epochs")
    NO_PROGRESS.advance(2, "val loss 1.0")
    NO_PROGRESS.finish("done")
    assert is_silent(NO_PROGRESS) and isinstance(NO_PROGRESS, NullProgress)
    assert not is_silent(RecordingProgress())


@pytest.mark.parametrize(("count", "text"), [(0, "0 epochs"), (1, "1 epoch"), (4000, "4,000 epochs")])
def test_plural(count: int, text: str) -> None:
    assert plural(count, "epoch") == text


def test_training_summary_names_the_best_validation_epoch() -> None:
    metrics = [{"epoch": 1, "val_loss": 3.0}, {"epoch": 2, "val_loss": 1.2345}, {"epoch": 3, "val_loss": 1.5}]
    assert training_summary(metrics) == "3 epochs, best val loss 1.234 at epoch 2"
    assert training_summary([{"epoch": 1, "val_loss": math.nan}]) == "1 epoch"  # no validation rows
    assert training_summary([]) == "0 epochs"


def test_statistics_evaluation_and_generation_summaries() -> None:
    assert statistics_summary({"count": 4000, "active_units": 12, "latent_dim": 16}) == (
        "4,000 training rows, 12/16 active units"
    )
    report = {"samplers": [{"name": n} for n in ("gmm", "prior", "gaussian")], "choice": {"name": "gmm"}}
    assert evaluation_summary(report) == "3 candidates, chose gmm"
    assert evaluation_summary({**report, "choice": None}) == "3 candidates, none passes the privacy guard"
    assert generation_summary(100_000, 4, 100_000 / 120_000) == "100,000 rows in 4 shards, 120,000 rows/s"


class FakeQueue:
    """The Ray queue's get(timeout) and shutdown, in-process."""

    def __init__(self) -> None:
        self.items: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed = False

    def get(self, timeout: float) -> dict[str, Any]:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            raise Empty from None

    def shutdown(self, force: bool = False) -> None:
        self.closed = True


def test_epoch_reports_move_the_bar_to_each_reported_epoch_and_drain_before_closing() -> None:
    progress, fake = RecordingProgress(), FakeQueue()
    reports = EpochReports(progress, epochs=5, queue=fake)
    # A resumed run reports from epoch 3 on: the bar jumps there, then moves one epoch at a time.
    for epoch, loss in ((3, 1.5), (4, 1.25), (5, 1.125)):
        fake.items.put({"epoch": epoch, "train_loss": loss + 1, "val_loss": loss})
    reports.close()  # what is queued when fit returns is still shown
    assert progress.calls == [
        ("advance", 3, "val loss 1.5"),
        ("advance", 1, "val loss 1.25"),
        ("advance", 1, "val loss 1.125"),
    ]
    assert fake.closed and not reports._thread.is_alive()
