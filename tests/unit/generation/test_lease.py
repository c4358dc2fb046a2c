"""lease.py: one driver at a time per output; a second is refused in one line, a dead or silent one is taken over."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.unit.generation.test_manifest import make_manifest
from vae_pipeline import storage
from vae_pipeline.errors import OutputExistsError
from vae_pipeline.generation import output
from vae_pipeline.generation.lease import OutputLease, lease_url, newest_lease
from vae_pipeline.generation.manifest import write_manifest


@pytest.fixture(params=["local", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"memory://lease-tests/{uuid.uuid4().hex}"


def claim(run_id: str = "run-a") -> output.RunClaim:
    return output.RunClaim(run_id=run_id, shards=3, rows=9, config={})


def lease_numbers(url: str) -> list[int]:
    return [int(u.rsplit("/", 1)[-1].removesuffix(".json")) for u in storage.list_urls(f"{url}/_lease", "*.json")]


def plant(url: str, number: int, **changes: object) -> None:
    """A lease file as another driver would have left it: alive on another host unless `changes` say otherwise."""
    values: dict[str, object] = {
        "owner": "other",
        "host": "another-host",
        "pid": 4242,
        "started": "2026-01-01T00:00:00+00:00",
        "renewed": time.time(),
        "ttl_s": 60.0,
    }
    values.update(changes)
    storage.write_json(lease_url(url, number), values)


def test_a_second_driver_is_refused_in_one_line_until_the_first_releases(url: str) -> None:
    first = OutputLease(url)
    first.acquire()
    with pytest.raises(OutputExistsError) as refused:
        OutputLease(url).acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert "being written by another driver" in message
    assert f"pid {first._record().pid} on {socket.gethostname()}" in message

    first.release()
    released = newest_lease(url)[1]
    assert released is not None and released.released and released.owner == first.owner
    second = OutputLease(url)
    second.acquire()
    assert lease_numbers(url) == [2]  # the older lease file is gone, the newest is never removed
    second.release()
    second.release()  # giving back twice, or a lease never taken, is a no-op
    OutputLease(url).release()


@pytest.mark.parametrize(
    ("changes", "taken"),
    [
        ({"released": True}, True),
        ({"renewed": time.time() - 120}, True),  # not renewed within its ttl: its driver stopped
        ({}, False),  # alive on another host
        ({"host": socket.gethostname(), "pid": None}, True),  # this host, a pid that no longer exists (filled in)
    ],
)
def test_a_lease_is_taken_over_only_when_released_expired_or_its_driver_is_gone(
    url: str, changes: dict[str, object], taken: bool
) -> None:
    if "pid" in changes:
        gone = subprocess.Popen(["true"])
        gone.wait()  # exited and reaped: its pid names no process now
        changes = {**changes, "pid": gone.pid}
    plant(url, 3, **changes)
    lease = OutputLease(url)
    if taken:
        lease.acquire()
        assert lease_numbers(url) == [4]
        lease.release()
    else:
        with pytest.raises(OutputExistsError, match="pid 4242 on another-host"):
            lease.acquire()
        assert lease_numbers(url) == [3]


def test_the_holder_renews_its_lease_and_stays_the_holder(url: str) -> None:
    lease = OutputLease(url, ttl_s=1.0)  # renewed every 0.25 s
    lease.acquire()
    first = newest_lease(url)[1]
    time.sleep(1.3)  # longer than the ttl: without renewal it would have expired
    assert first is not None and newest_lease(url)[1].renewed > first.renewed
    with pytest.raises(OutputExistsError, match="being written"):
        OutputLease(url).acquire()
    lease.check()
    lease.release()


def test_a_holder_that_was_taken_over_must_not_commit(url: str) -> None:
    lease = OutputLease(url, ttl_s=0.4)
    lease.acquire()
    plant(url, lease.number + 1)  # another driver took over while this one stalled past its ttl
    with pytest.raises(OutputExistsError, match="another driver took the output over"):
        lease.check()
    lease.release()
    assert newest_lease(url)[1].owner == "other"  # giving back a lost lease leaves the new holder's alone


def test_racing_drivers_get_exactly_one_lease(url: str) -> None:
    start, outcomes = threading.Barrier(6), [""] * 6
    leases = [OutputLease(url) for _ in range(6)]

    def race(index: int) -> None:
        start.wait()
        try:
            leases[index].acquire()
            outcomes[index] = "held"
        except OutputExistsError as exc:
            outcomes[index] = str(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("held") == 1
    assert lease_numbers(url) == [1]
    leases[outcomes.index("held")].release()


def test_a_driver_that_read_the_numbers_long_ago_cannot_slip_in_below_the_newest(url: str) -> None:
    plant(url, 7, released=True)
    late = OutputLease(url)
    assert not late._create(4)  # it saw number 3 free, and 4 was removed since: created, then withdrawn
    assert lease_numbers(url) == [7]
    late.acquire()
    assert lease_numbers(url) == [8]
    late.release()


def test_claiming_takes_the_lease_and_a_refused_claim_leaves_no_trace(url: str) -> None:
    write_manifest(url, make_manifest(run_id="another-run"))
    with pytest.raises(OutputExistsError, match="another run"):
        output.claim_output(url, claim(), overwrite=False, resume=False, lease=OutputLease(url))
    assert lease_numbers(url) == []

    first = OutputLease(url)
    output.claim_output(url, claim(), overwrite=True, resume=False, lease=first)
    assert first.held and output.read_claim(url) == claim()
    assert "a driver is writing it now" in output.output_status(url)["writing"]
    for overwrite, resume in [(False, True), (True, False)]:  # even --overwrite waits for the writer
        with pytest.raises(OutputExistsError, match="being written by another driver"):
            output.claim_output(url, claim("run-b"), overwrite=overwrite, resume=resume, lease=OutputLease(url))
        with pytest.raises(OutputExistsError, match="being written by another driver"):
            output.check_output_free(url, overwrite=overwrite, resume=resume, config={})
    assert output.read_claim(url) == claim()
    first.release()
    assert "writing" not in output.output_status(url)


def test_a_lease_on_s3(s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/synthetic"
    first = OutputLease(url)
    first.acquire()
    with pytest.raises(OutputExistsError, match="being written by another driver"):
        OutputLease(url).acquire()
    first.release()
    second = OutputLease(url)
    second.acquire()
    assert lease_numbers(url) == [2]
    second.release()
