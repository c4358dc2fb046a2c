"""ray_jobs.py without a cluster: entrypoints, attempt bookkeeping, error mapping, and addresses that do not answer.

The job API is replaced by an in-memory fake with the same methods; the address tests use loopback sockets.
"""

from __future__ import annotations

import http.server
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import typer
from ray.job_submission import JobDetails, JobStatus, JobType

from tests.conftest import free_port
from vae_pipeline import ray_jobs
from vae_pipeline.errors import ArtifactMismatchError, ConfigError, DataError, PrivacyError, StorageError
from vae_pipeline.ray_jobs import (
    STEP_OPTIONS,
    RayJobError,
    attempts_of,
    connect,
    is_jobs_address,
    job_failure,
    run_step_as_job,
    step_entrypoint,
)

# ------------------------------------------------------------------ addresses and entrypoints


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:8265", True),
        ("https://ray.example.com", True),
        (" HTTP://head:8265 ", True),
        ("ray://head:10001", False),
        ("auto", False),
        ("127.0.0.1:6379", False),
        ("", False),
    ],
)
def test_only_dashboard_addresses_mean_ray_jobs(address: str, expected: bool) -> None:
    assert is_jobs_address(address) is expected


def test_step_entrypoint_quotes_and_spells_flags_as_the_cli_does() -> None:
    command = step_entrypoint(
        "generate", "s3://bucket/my config.yaml", model="s3://b/model", rows=100, resume=True, overwrite=False
    )

    assert shlex.split(command) == [
        "vae-pipeline",
        "generate",
        "--config",
        "s3://bucket/my config.yaml",
        "--model",
        "s3://b/model",
        "--rows",
        "100",
        "--resume",
    ]
    assert step_entrypoint("stats", "c.yaml", program=("python", "-m", "vae_pipeline.cli"), seed=None) == (
        "python -m vae_pipeline.cli stats --config c.yaml"
    )
    assert "--no-privacy-guard" in step_entrypoint("generate", "c.yaml", no_privacy_guard=True)


def test_step_entrypoint_refuses_unknown_steps_and_options() -> None:
    with pytest.raises(ValueError, match="unknown step 'inspect'"):
        step_entrypoint("inspect", "c.yaml")
    with pytest.raises(ValueError, match=r"takes no option \['resume'\]"):
        step_entrypoint("train", "c.yaml", resume=True)


def test_step_options_match_the_cli() -> None:
    from vae_pipeline.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for step, options in STEP_OPTIONS.items():
        cli_options = {param.name for param in commands[step].params} - {"config"}
        assert cli_options == options, step


# ------------------------------------------------------------------ attempts and exactly once


def details(submission_id: str, status: JobStatus, **fields: Any) -> JobDetails:
    return JobDetails(type=JobType.SUBMISSION, submission_id=submission_id, status=status, entrypoint="x", **fields)


def test_attempts_are_the_key_and_its_numbered_retries_only() -> None:
    jobs = [
        details("vae-run-train", JobStatus.FAILED),
        details("vae-run-train-1", JobStatus.FAILED),
        details("vae-run-train-12", JobStatus.SUCCEEDED),
        details("vae-run-train-x", JobStatus.SUCCEEDED),
        details("vae-run-trainer-1", JobStatus.SUCCEEDED),
        details("other-vae-run-train-1", JobStatus.SUCCEEDED),
    ]

    assert sorted(attempts_of(jobs, "vae-run-train")) == [0, 1, 12]


@dataclass
class FakeJob:
    """A job's successive (status, log so far) as the client sees them, one per `get_job_info`."""

    states: list[tuple[JobStatus, str]]
    exit_code: int | None = None
    polls: int = 0

    def current(self) -> tuple[JobStatus, str]:
        return self.states[min(self.polls, len(self.states)) - 1] if self.polls else (JobStatus.PENDING, "")


@dataclass
class FakeClient:
    """The four JobSubmissionClient methods run_step_as_job uses; `script(attempt)` decides how a job goes."""

    script: Any
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    steal_next: bool = False  # another submitter takes the attempt number just before us

    def list_jobs(self) -> list[JobDetails]:
        return [self._details(sid) for sid in self.jobs]

    def submit_job(self, *, entrypoint: str, submission_id: str, **kwargs: Any) -> str:
        if self.steal_next:
            self.steal_next = False
            self.jobs[submission_id] = FakeJob([(JobStatus.RUNNING, "theirs\n"), (JobStatus.SUCCEEDED, "theirs\n")])
        if submission_id in self.jobs:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists. Please use a different one.")
        self.jobs[submission_id] = self.script(len(self.jobs) + 1)
        self.submitted.append(submission_id)
        return submission_id

    def get_job_info(self, submission_id: str) -> JobDetails:
        self.jobs[submission_id].polls += 1
        return self._details(submission_id)

    def get_job_logs(self, submission_id: str) -> str:
        return self.jobs[submission_id].current()[1]

    def _details(self, submission_id: str) -> JobDetails:
        job = self.jobs[submission_id]
        status = job.current()[0]
        return details(submission_id, status, driver_exit_code=job.exit_code if status.is_terminal() else None)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClient]:
    def script(attempt: int) -> FakeJob:
        if attempt == 1:  # the first attempt crashes, the second succeeds
            return FakeJob([(JobStatus.RUNNING, "step 1\nstep"), (JobStatus.FAILED, "step 1\nstep 2\nTraceback")], 1)
        return FakeJob([(JobStatus.RUNNING, "ok 1\n"), (JobStatus.SUCCEEDED, "ok 1\nok 2")], 0)

    client = FakeClient(script)
    monkeypatch.setattr(ray_jobs, "connect", lambda address, timeout_s: client)
    yield client


def run(lines: list[str] | None = None) -> str:
    log = lines.append if lines is not None else (lambda line: None)
    return run_step_as_job("http://head:8265", "vae-run/1-train", "cmd", log=log, poll_s=0)


def test_a_failed_attempt_raises_a_retryable_error_with_its_log_tail(fake: FakeClient) -> None:
    lines: list[str] = []
    with pytest.raises(RayJobError) as raised:
        run(lines)

    # Log lines arrive once each, a partial line only when complete; the key is made a valid submission id.
    assert lines[1:] == ["step 1", "step 2", "Traceback"]
    assert fake.submitted == ["vae-run_1-train-1"]
    assert "Ray job vae-run_1-train-1 FAILED" in str(raised.value)
    assert str(raised.value).endswith("  step 1\n  step 2\n  Traceback")
    assert not isinstance(raised.value, ConfigError)


def test_a_retry_submits_the_next_attempt_and_a_success_is_never_rerun(fake: FakeClient) -> None:
    with pytest.raises(RayJobError):
        run()
    lines: list[str] = []

    assert run(lines) == "vae-run_1-train-2"
    assert run() == "vae-run_1-train-2"
    assert fake.submitted == ["vae-run_1-train-1", "vae-run_1-train-2"]
    assert lines[1:] == ["ok 1", "ok 2", "Ray job vae-run_1-train-2 succeeded"]


def test_a_running_attempt_is_followed(fake: FakeClient) -> None:
    colour = "\x1b[36m(RayTrainWorker pid=7)\x1b[0m b\n"
    fake.jobs["vae-run_1-train-1"] = FakeJob([(JobStatus.RUNNING, "a\n"), (JobStatus.SUCCEEDED, "a\n" + colour)], 0)
    lines: list[str] = []

    assert run(lines) == "vae-run_1-train-1"
    assert fake.submitted == []
    assert "attaching to Ray job vae-run_1-train-1" in lines[0]
    assert lines[1:3] == ["a", "(RayTrainWorker pid=7) b"]


def test_an_attempt_number_taken_concurrently_is_followed_not_duplicated(fake: FakeClient) -> None:
    fake.steal_next = True

    assert run() == "vae-run_1-train-1"
    assert fake.submitted == []


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("code", "error"),
    [(2, ConfigError), (3, DataError), (4, StorageError), (5, ArtifactMismatchError), (6, PrivacyError)],
)
def test_cli_exit_codes_map_back_to_the_cli_errors(code: int, error: type[Exception]) -> None:
    logs = "INFO starting\nerror: the first line\nmore\nerror: data.input_url 'x' does not exist; check it\n"
    failed = details("k-1", JobStatus.FAILED, driver_exit_code=code, message="Job entrypoint command failed")

    raised = job_failure(failed, logs, "k-1")

    assert type(raised) is error
    assert str(raised) == "data.input_url 'x' does not exist; check it (Ray job k-1)"


def test_the_exit_code_is_read_from_the_message_when_ray_does_not_report_it() -> None:
    message = "Job entrypoint command failed with exit code 3, last available logs (truncated to 20,000 chars):\n..."
    failed = details("k-2", JobStatus.FAILED, message=message)

    assert isinstance(job_failure(failed, "error: empty table\n", "k-2"), DataError)


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (JobStatus.FAILED, {"driver_exit_code": 1, "message": "Job entrypoint command failed with exit code 1"}),
        (JobStatus.FAILED, {"driver_exit_code": -9, "message": "killed"}),
        (JobStatus.FAILED, {"message": "Failed to set up runtime environment.\nlong details"}),
        (JobStatus.STOPPED, {"message": "Job was intentionally stopped."}),
    ],
)
def test_other_failures_are_retryable(status: JobStatus, fields: dict[str, Any]) -> None:
    logs = "".join(f"line {i}\n" for i in range(30))

    raised = job_failure(details("k-3", status, **fields), logs, "k-3")

    assert type(raised) is RayJobError
    first, *rest = str(raised).splitlines()
    assert first == f"Ray job k-3 {status}: {fields['message'].splitlines()[0]}"
    assert rest == ["last log lines:", *(f"  line {i}" for i in range(20, 30))]


# ------------------------------------------------------------------ addresses that do not answer as a cluster


def test_a_closed_port_is_a_config_error_after_a_bounded_wait() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(ConfigError) as raised:
        connect(address, timeout_s=3)

    assert 1.5 < time.monotonic() - started < 6  # it retried, and then gave up
    message = str(raised.value)
    assert f"the Ray cluster at {address} did not answer within 3s" in message
    assert f"ray job list --address {address}" in message and "\n" not in message


def test_a_silent_server_cannot_hang_the_task() -> None:
    with socket.socket() as server:  # accepts connections (the kernel does) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = f"http://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ConfigError, match="did not answer within 2s"):
            connect(address, timeout_s=2)
        assert time.monotonic() - started < 8


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 404

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"nope")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, "answers but not as a Ray dashboard"), (401, "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN")],
)
def test_a_server_that_is_not_an_open_ray_dashboard_is_a_config_error(status: int, expected: str) -> None:
    handler = type("Handler", (_Handler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=expected) as raised:
            connect(f"http://user:secret@127.0.0.1:{server.server_address[1]}", timeout_s=30)
        assert time.monotonic() - started < 5  # no retrying: the answer will not change
        assert "secret" not in str(raised.value)
    finally:
        server.shutdown()
        server.server_close()
