"""Cluster mode: each heavy step runs as a Ray Job on a remote cluster, at most once per flow run and step.

With `ray.address` set to a cluster's dashboard (`http://HOST:8265`), a step is not run in the driver's process:
it is submitted as a Ray Job whose entrypoint is the step's CLI command (`step_entrypoint`). The submission id is
derived from a key the caller chooses (the flow run and the step), so a retried task finds the job it submitted
before: a succeeded job is not run again, a running one is followed, and only a failed or stopped one is
submitted anew, under the next attempt number (`<key>-1`, `<key>-2`, ...).

A job that fails with one of the CLI's user-error exit codes raises that same error (ConfigError, DataError, ...)
with the CLI's one-line message, so Prefect does not retry bad input; any other failure raises `RayJobError`,
which Prefect retries. `ray://` addresses are Ray Client, and `auto`, `host:port` or an empty address run steps
in-process: both go through `runtime.ensure_ray`, not here.

The entrypoint runs in the cluster's environment: the package must be installed there (the cluster image), and
nothing is uploaded unless `runtime_env` asks for it. Credentials go in by reference (`runtime_env["env_vars"]`
naming a profile or a secret mount), never as values copied from the config. On a cluster with token
authentication, the submitting process needs `RAY_AUTH_MODE=token` and the token (`RAY_AUTH_TOKEN` or
`RAY_AUTH_TOKEN_PATH`) in its environment, as for the `ray job` CLI.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from vae_pipeline.config import PipelineConfig, RayConfig
from vae_pipeline.errors import (
    ArtifactMismatchError,
    ConfigError,
    DataError,
    PrivacyError,
    StorageError,
    VaePipelineError,
)
from vae_pipeline.storage import redact_url

logger = logging.getLogger(__name__)

# The CLI exits with its error's exit code after printing `error: <message>` on stderr (cli.main).
USER_ERRORS: dict[int, type[VaePipelineError]] = {
    cls.exit_code: cls for cls in (ConfigError, DataError, StorageError, ArtifactMismatchError, PrivacyError)
}
# Options each CLI step accepts besides --config (vae_pipeline/cli.py; a unit test keeps the two in step).
STEP_OPTIONS: dict[str, frozenset[str]] = {
    "train": frozenset({"input", "model", "epochs", "seed", "label", "workers", "verbose"}),
    "stats": frozenset({"model", "statistics", "seed", "workers", "verbose"}),
    "evaluate": frozenset({"model", "input", "rows", "seed", "statistics", "verbose"}),
    "generate": frozenset(
        {"model", "output", "rows", "seed", "sampler", "temperature", "statistics", "workers", "overwrite"}
        | {"resume", "no_privacy_guard", "verbose"}
    ),
}
ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)
REQUEST_TIMEOUT_S = 10.0  # one HTTP request to the dashboard; Ray's own requests have no timeout at all
LOG_TAIL_LINES = 10
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_EXIT_CODE = re.compile(r"exit code (-?\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours its "(Actor pid=...)" prefixes
_T = TypeVar("_T")


class RayJobError(RuntimeError):
    """A step's Ray Job failed for a reason other than bad input; retrying submits a new attempt.

    Deliberately not a VaePipelineError: Prefect retries it, and the CLI shows its traceback.
    """


def is_jobs_address(address: str) -> bool:
    """Whether `ray.address` means "submit each step as a Ray Job": a dashboard's http:// or https:// address."""
    return address.strip().lower().startswith(("http://", "https://"))


def config_for_job(config: PipelineConfig) -> PipelineConfig:
    """The config a step's job runs with: inside a Ray Job, Ray is the cluster the job runs on.

    A job's driver finds its cluster through RAY_ADDRESS (set by Ray), so `ray.address` becomes `auto`; the
    dashboard's http:// address would be refused by `ray.init`, and `num_cpus` is refused on an existing cluster.
    """
    return config.model_copy(update={"ray": RayConfig(address="auto")})


def step_entrypoint(step: str, config_url: str, *, program: Sequence[str] = ("vae-pipeline",), **options: Any) -> str:
    """The shell command that runs one CLI step with the given config, for a Ray Job's entrypoint.

    Options are the step's CLI flags by their Python names (`no_privacy_guard=True` -> `--no-privacy-guard`);
    True adds a flag, False or None leaves it out. `program` is how the cluster runs the CLI.

    Raises:
        ValueError: an unknown step or an option the step does not take.
    """
    if step not in STEP_OPTIONS:
        raise ValueError(f"unknown step {step!r}; expected one of {sorted(STEP_OPTIONS)}")
    unknown = sorted(set(options) - STEP_OPTIONS[step])
    if unknown:
        raise ValueError(f"`vae-pipeline {step}` takes no option {unknown}; it takes {sorted(STEP_OPTIONS[step])}")
    args = [*program, step, "--config", config_url]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    return shlex.join(args)


def run_step_as_job(
    address: str,
    job_key: str,
    entrypoint: str,
    *,
    runtime_env: dict[str, Any] | None = None,
    log: Callable[[str], None] = logger.info,
    poll_s: float = 1.0,
    connect_timeout_s: float = 30.0,
) -> str:
    """Run `entrypoint` as a Ray Job on the cluster at `address`, at most once per `job_key`, and wait for it.

    The job's log lines are passed to `log` as they appear. Returns the submission id of the job that did the
    work (submitted now, followed, or found already succeeded).

    Raises:
        ConfigError: the address does not answer within `connect_timeout_s`, is not a Ray dashboard, or refuses
            the credentials; also a job that failed with the CLI's config-error exit code.
        DataError, StorageError, ArtifactMismatchError, PrivacyError: the job failed with that error's exit code.
        RayJobError: the job failed otherwise, was stopped, or the cluster stopped answering while it ran.
    """
    key = _submission_key(job_key)
    client = connect(address, connect_timeout_s)
    submission_id, done = _claim(client, key, entrypoint, runtime_env or {}, log)
    if done:
        return submission_id
    details, logs = _follow(client, submission_id, log, poll_s, connect_timeout_s)
    if details.status == JobStatus.SUCCEEDED:
        log(f"Ray job {submission_id} succeeded")
        return submission_id
    raise job_failure(details, logs, submission_id)


def connect(address: str, timeout_s: float = 30.0) -> JobSubmissionClient:
    """A job client for the dashboard at `address`, retried until it answers or `timeout_s` has passed."""
    shown = redact_url(address)
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            client = _TimeoutClient(address, request_timeout_s=min(REQUEST_TIMEOUT_S, max(left, 1.0)))
            client.request_timeout_s = REQUEST_TIMEOUT_S
            if client.get_address().rstrip("/") != address.strip().rstrip("/"):
                logger.warning(
                    "Ray Jobs go to %s, not to ray.address %s: RAY_API_SERVER_ADDRESS or RAY_ADDRESS is set in "
                    "this environment, and Ray lets it win",
                    redact_url(client.get_address()),
                    shown,
                )
            return client
        except AuthenticationError as exc:
            raise ConfigError(
                f"the Ray cluster at {shown} refused this client: {_first_line(exc)}; set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) in the environment that submits the steps"
            ) from exc
        except (RuntimeError, ValueError, KeyError) as exc:  # it answers, but not as Ray's job API does
            raise ConfigError(
                f"{shown} answers but not as a Ray dashboard ({_first_line(exc)}); ray.address must be the "
                "dashboard's http://HOST:8265 address (ray:// for Ray Client, host:port or auto to run in-process)"
            ) from exc
        except OSError as exc:  # refused, unreachable, timed out (requests' errors are OSErrors too)
            if time.monotonic() + 1.0 >= deadline:
                raise ConfigError(_unreachable(shown, timeout_s, exc)) from exc
        time.sleep(1.0)


def _unreachable(shown: str, timeout_s: float, exc: BaseException) -> str:
    reason = _first_line(exc).rstrip(".")
    return (
        f"the Ray cluster at {shown} did not answer within {timeout_s:g}s ({reason}); is the head node running and "
        f"reachable from here? Open {shown} in a browser or run `ray job list --address {shown}`; ray.address must "
        "be the Ray dashboard's http://HOST:8265 address"
    )


class _TimeoutClient(JobSubmissionClient):  # type: ignore[misc]
    """Ray's job client with a timeout on every request, so an address that never answers cannot hang a task."""

    def __init__(self, address: str, *, request_timeout_s: float) -> None:
        self.request_timeout_s = request_timeout_s  # set first: the base constructor already makes requests
        super().__init__(address)

    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.request_timeout_s)
        return super()._do_request(method, endpoint, **kwargs)


def _submission_key(job_key: str) -> str:
    """`job_key` with every character a submission id may not hold (URL paths, file names) replaced by `_`."""
    key = _KEY_CHARS.sub("_", job_key.strip())
    if not key or len(key) > 200:
        raise ValueError(f"job key {job_key!r} must have 1 to 200 characters")
    return key


def attempts_of(jobs: Iterable[JobDetails], key: str) -> dict[int, JobDetails]:
    """The jobs submitted under `key`, by attempt number (`key` itself is attempt 0, `key-N` attempt N)."""
    pattern = re.compile(re.escape(key) + r"(?:-(\d+))?")
    found = {}
    for job in jobs:
        match = pattern.fullmatch(job.submission_id or "")
        if match:
            found[int(match.group(1) or 0)] = job
    return found


def _claim(
    client: JobSubmissionClient, key: str, entrypoint: str, runtime_env: dict[str, Any], log: Callable[[str], None]
) -> tuple[str, bool]:
    """(submission id, already succeeded): the job to follow, submitting a new attempt only when none is usable."""
    for _ in range(3):  # a concurrent submitter may take the attempt number first: look again
        attempts = attempts_of(_call(client.list_jobs), key)
        for status, message in ((JobStatus.SUCCEEDED, "already done by"), *((s, "attaching to") for s in ACTIVE)):
            found = [number for number, job in attempts.items() if job.status == status]
            if found:
                submission_id = str(attempts[max(found)].submission_id)
                log(f"step {key}: {message} Ray job {submission_id} ({status}); not submitting it again")
                return submission_id, status == JobStatus.SUCCEEDED
        submission_id = f"{key}-{max(attempts, default=0) + 1}"
        try:
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata={"vae_pipeline_step": key},
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                continue
            raise RayJobError(f"submitting Ray job {submission_id} failed: {exc}") from exc
        except OSError as exc:
            raise RayJobError(
                f"submitting Ray job {submission_id} got no answer ({_first_line(exc)}); a retry follows the job "
                "if the cluster accepted it"
            ) from exc
        log(f"step {key}: submitted Ray job {submission_id}: {entrypoint}")
        return submission_id, False
    raise RayJobError(f"step {key}: could not claim a submission id; other submitters keep taking them")


def _follow(
    client: JobSubmissionClient, submission_id: str, log: Callable[[str], None], poll_s: float, patience_s: float
) -> tuple[JobDetails, str]:
    """Poll the job until it ends, passing each new complete log line to `log`; (final details, all logs).

    Polling the whole log (an append-only file on the head) and emitting only what is new is robust where the
    websocket tail is not: it survives dropped connections and needs no event loop in the caller's thread.
    """
    emitted = 0
    while True:
        # Status first, logs second: once the status is terminal the driver has exited and its log is complete.
        details = _call(client.get_job_info, submission_id, patience_s=patience_s)
        logs = _ANSI.sub("", _call(client.get_job_logs, submission_id, patience_s=patience_s))
        final = details.status.is_terminal()
        end = len(logs) if final else logs.rfind("\n") + 1
        for line in logs[emitted:end].splitlines():
            if line.strip():
                log(line.rstrip())
        emitted = max(emitted, end)
        if final:
            return details, logs
        time.sleep(poll_s)


def _call(method: Callable[..., _T], *args: Any, patience_s: float = 30.0) -> _T:
    """One request to the cluster, retried for `patience_s` while the cluster does not answer."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return method(*args)
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise RayJobError(
                    f"the Ray cluster stopped answering ({_first_line(exc)}); its jobs may still be running, "
                    "and a retry follows them instead of submitting again"
                ) from exc
            time.sleep(1.0)


def job_failure(details: JobDetails, logs: str, submission_id: str) -> Exception:
    """The error a failed or stopped job raises: the CLI's own error for its user-error exit codes."""
    code = details.driver_exit_code
    if code is None and details.message and (match := _EXIT_CODE.search(details.message)):
        code = int(match.group(1))
    lines = [line.rstrip() for line in logs.splitlines() if line.strip()]
    error_class = USER_ERRORS.get(code) if code is not None else None
    if error_class is not None:
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        reason = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
        return error_class(f"{reason} (Ray job {submission_id})")
    tail = "\n".join("  " + line for line in lines[-LOG_TAIL_LINES:]) or "  (no output)"
    return RayJobError(
        f"Ray job {submission_id} {details.status}: {_first_line(details.message or 'no message')}\n"
        f"last log lines:\n{tail}"
    )


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
