"""A lease on an output folder: one driver at a time writes or resumes it, and a second one is refused.

    _lease/000000000003.json   {"owner", "host", "pid", "started", "renewed", "ttl_s", "released"}

The lease is the newest numbered file under `_lease/`. A driver takes the output by creating the next number with
`storage.create_exclusive` (a hard link locally, a conditional PUT `If-None-Match: *` on S3), and only when the
newest lease is free: released, expired (not renewed within its ttl), or held by a process of this host that no
longer exists (a killed driver: `--resume` right after a crash needs no wait). Numbers only grow and the newest file
is never deleted, so drivers racing for a free lease all try to create the same next number, and the store lets
exactly one of them. The holder renews its file from a background thread; a holder that finds a newer number has
lost the lease (it stalled past its ttl and another driver took over) and must not commit.

Clocks of the machines that share an output must agree to well within the ttl. Underscore names are ignored by
pyarrow.dataset, pandas and Ray Data, so readers of the shards never see the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from vae_pipeline import storage
from vae_pipeline.errors import OutputExistsError, StorageError

logger = logging.getLogger(__name__)

LEASE_DIR = "_lease"
LEASE_TTL_S = 60.0  # a driver on another host that died is waited for this long; renewed every quarter of it
_NAME_DIGITS = 12
_ATTEMPTS = 5  # lost creation races before giving up (each loss means another driver got the lease meanwhile)


@dataclass(frozen=True)
class LeaseRecord:
    """What one lease file says: who holds it, since when, and until when it is valid without renewal."""

    owner: str
    host: str
    pid: int
    started: str
    renewed: float  # seconds since the epoch, on the holder's clock
    ttl_s: float
    released: bool = False

    def to_bytes(self) -> bytes:
        return storage.canonical_json(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LeaseRecord:
        return cls(**data)

    def free_because(self, now: float) -> str | None:
        """Why another driver may take over ("released", "expired", "driver gone"), or None while it is held."""
        if self.released:
            return "released"
        if now > self.renewed + self.ttl_s:
            return "expired"
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return "driver gone"
        return None

    def describe(self, now: float) -> str:
        return (
            f"pid {self.pid} on {self.host}, since {self.started}, renewed {max(now - self.renewed, 0):.0f}s ago, "
            f"expires in {max(self.renewed + self.ttl_s - now, 0):.0f}s"
        )


def lease_dir(output_url: str) -> str:
    return storage.join_url(output_url, LEASE_DIR)


def lease_url(output_url: str, number: int) -> str:
    return storage.join_url(lease_dir(output_url), f"{number:0{_NAME_DIGITS}d}.json")


def newest_lease(output_url: str) -> tuple[int, LeaseRecord | None]:
    """The highest lease number at the output and its record; (0, None) when no driver ever held it."""
    for _ in range(_ATTEMPTS):
        number = max(_numbers(output_url), default=0)
        if number == 0:
            return 0, None
        url = lease_url(output_url, number)
        try:
            return number, LeaseRecord.from_json(storage.read_json(url))
        except (StorageError, TypeError, KeyError) as exc:
            if not storage.exists(url):  # withdrawn since the listing (see OutputLease._create): look again
                continue
            raise StorageError(
                f"the lease file {storage.redact_url(url)} is unreadable ({exc}); if no driver is writing this "
                "output, delete it and run again"
            ) from None
    raise StorageError(f"the lease files at {storage.redact_url(lease_dir(output_url))} keep changing; run again")


def holder_of(output_url: str) -> LeaseRecord | None:
    """The lease's record while a driver holds it, else None."""
    _, record = newest_lease(output_url)
    return record if record is not None and record.free_because(time.time()) is None else None


def refuse_if_held(output_url: str) -> None:
    """Raise the one-line "being written" error if a live driver holds the output's lease."""
    record = holder_of(output_url)
    if record is not None:
        raise _busy(output_url, record)


class OutputLease:
    """The right to write one output, held from `acquire` to `release` and renewed in between."""

    def __init__(self, output_url: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.output_url = output_url
        self.ttl_s = ttl_s
        self.owner = uuid.uuid4().hex
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.number = 0
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.number > 0

    def acquire(self) -> None:
        """Take the lease, or raise a one-line OutputExistsError naming the driver that holds it."""
        if self.held:
            return
        for _ in range(_ATTEMPTS):
            number, current = newest_lease(self.output_url)
            if current is not None:
                reason = current.free_because(time.time())
                if reason is None:
                    raise _busy(self.output_url, current)
                logger.info("taking over the lease at %s (%s)", storage.redact_url(self.output_url), reason)
            if self._create(number + 1):
                self._start_renewing()
                self._remove_older()
                return
        raise OutputExistsError(
            f"output {storage.redact_url(self.output_url)}: lost the race for its lease {_ATTEMPTS} times, so "
            "other drivers are starting on it; let one finish, then run again"
        )

    def check(self) -> None:
        """Raise if another driver took the lease over: this one must not commit."""
        if not self.held:
            return
        number, record = newest_lease(self.output_url)
        if self.lost or number != self.number:
            self.lost = True
            holder = f" ({record.describe(time.time())})" if record is not None else ""
            raise OutputExistsError(
                f"output {storage.redact_url(self.output_url)}: this driver's lease expired and another driver took "
                f"the output over{holder}; nothing was committed by this one"
            )

    def release(self) -> None:
        """Give the lease back (after success or failure); a no-op if never taken or already given back."""
        if not self.held:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            if newest_lease(self.output_url)[0] == self.number:
                storage.atomic_write(lease_url(self.output_url, self.number), self._record(released=True).to_bytes())
        except StorageError as exc:  # it expires on its own; the run's own outcome matters more than this
            logger.warning("could not release the lease at %s: %s", storage.redact_url(self.output_url), exc)
        self.number = 0

    def _create(self, number: int) -> bool:
        """Create lease file `number`; True only if it is then the newest (not a number an older file once had)."""
        url = lease_url(self.output_url, number)
        if not storage.create_exclusive(url, self._record().to_bytes()):
            return False
        if newest_lease(self.output_url)[0] != number:
            storage.remove(url)  # a driver that read the numbers long ago re-created a removed old one: back off
            return False
        self.number = number
        return True

    def _record(self, released: bool = False) -> LeaseRecord:
        return LeaseRecord(
            owner=self.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.started,
            renewed=time.time(),
            ttl_s=self.ttl_s,
            released=released,
        )

    def _remove_older(self) -> None:
        for number in _numbers(self.output_url):
            if number < self.number:
                storage.remove(lease_url(self.output_url, number))

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="output-lease", daemon=True)
        self._renewer.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if newest_lease(self.output_url)[0] != self.number:
                    self.lost = True
                    logger.error("lost the lease at %s to another driver", storage.redact_url(self.output_url))
                    return
                storage.atomic_write(lease_url(self.output_url, self.number), self._record().to_bytes())
            except StorageError as exc:  # a passing storage hiccup; the lease stays valid for its ttl
                logger.warning("could not renew the lease at %s: %s", storage.redact_url(self.output_url), exc)


def _busy(output_url: str, record: LeaseRecord) -> OutputExistsError:
    return OutputExistsError(
        f"output {storage.redact_url(output_url)} is being written by another driver "
        f"({record.describe(time.time())}); wait for it to finish, or choose another --output"
    )


def _numbers(output_url: str) -> list[int]:
    """The numbers of the lease files at the output (freshly listed: another driver may have just added one)."""
    stems = [url.rsplit("/", 1)[-1].removesuffix(".json") for url in storage.list_urls(lease_dir(output_url), "*.json")]
    return [int(stem) for stem in stems if stem.isdigit()]


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host runs under `pid` (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:  # Linux: "pid (name) state ..."
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): trust kill()
        return True
