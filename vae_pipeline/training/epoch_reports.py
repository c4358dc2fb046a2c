"""Each epoch's losses from the rank-0 training worker to the driver's progress, while `trainer.fit()` blocks.

Ray Train V2 hands the workers' `ray.train.report` metrics to its controller actor and gives the driver nothing
until `fit` returns. So the worker also puts a few numbers per epoch in a Ray queue (`tell_driver`), an actor that
holds no CPU and so never waits behind the training workers, and a thread on the driver takes them off as they
arrive (`EpochReports`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

from ray.exceptions import RayError
from ray.util.queue import Empty, Queue

from vae_pipeline.progress import Progress

logger = logging.getLogger(__name__)

POLL_S = 1.0  # how long the reader waits for the next report before it checks whether fit has ended
REPORTED = ("epoch", "train_loss", "val_loss")


class EpochReports:
    """The driver's end: a queue for the workers (pass `queue` in the train loop config) and a thread that moves
    `progress` as reports arrive, until `close` (after `fit` returns: what is still queued is shown first)."""

    def __init__(self, progress: Progress, epochs: int, queue: Any = None) -> None:
        self.queue = queue if queue is not None else Queue(actor_options={"num_cpus": 0})
        self.progress = progress
        self.epochs = epochs
        self.seen = 0
        self._closing = threading.Event()
        # The reader logs with the caller's run id and step: its context goes with it.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._read,), name="vae-pipeline-epoch-reports", daemon=True
        )
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                report = self.queue.get(timeout=POLL_S)
            except Empty:
                if self._closing.is_set():
                    return  # fit has returned and the queue is drained
                continue
            except RayError:  # the queue actor is gone: nothing more will arrive
                return
            self.show(report)

    def show(self, report: dict[str, Any]) -> None:
        """Move the bar to the reported epoch (a resumed run starts past 0) and log the losses here too."""
        epoch = int(report["epoch"])
        logger.info(
            "epoch %d/%d reported: train loss %.4f, val loss %.4f",
            epoch,
            self.epochs,
            report["train_loss"],
            report["val_loss"],
        )
        self.progress.advance(max(epoch - self.seen, 0), f"val loss {report['val_loss']:.4g}")
        self.seen = max(self.seen, epoch)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10 * POLL_S)
        self.queue.shutdown(force=True)


def tell_driver(reports: Queue | None, record: dict[str, Any]) -> None:
    """Put an epoch's losses where the driver's progress bar reads them; a lost queue only costs the bar."""
    if reports is None:
        return
    try:
        reports.put_nowait({k: record[k] for k in REPORTED})
    except RayError as exc:
        logger.debug("epoch report not delivered: %s", exc)
