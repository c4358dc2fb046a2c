"""The quiet console: step lines and bars, the summary's tables, the log file's place, and output diverted to it."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from rich.console import Console

from tests.conftest import REPO
from vae_pipeline.console import ConsoleProgress, WarningsToConsole, column_roles, roles_table, scores_table
from vae_pipeline.logs import FALLBACK_LOG_DIR, log_file_for


def recording_console(terminal: bool = False) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=200, color_system=None)


def text_of(out: Console) -> str:
    file = out.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def test_a_step_prints_one_line_as_it_starts_and_one_as_it_ends() -> None:
    out = recording_console()
    progress = ConsoleProgress(out)
    progress.start("train", None, "epochs")
    progress.start("train", 30, "epochs")  # the same step learning its size prints nothing
    progress.advance(3, "val loss 1.5")
    progress.finish("30 epochs, best val loss 1.23 at epoch 27")
    progress.close()
    lines = text_of(out).splitlines()
    assert lines[0] == "train started"
    assert lines[1].startswith("train done in ") and lines[1].endswith("s: 30 epochs, best val loss 1.23 at epoch 27")
    assert len(lines) == 2


def test_a_step_left_open_is_stopped_by_the_next_and_failed_by_an_error() -> None:
    out = recording_console()
    progress = ConsoleProgress(out)
    progress.start("train", 3)
    progress.start("train-again", 3)  # a retried task, say
    progress.close(failed=True)
    lines = text_of(out).splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        "train started",
        "train stopped",
        "train-again started",
        "train-again failed",
    ]


def test_bars_on_a_terminal_take_advances_from_another_thread_and_leave_only_the_lines() -> None:
    out = recording_console(terminal=True)
    progress = ConsoleProgress(out)
    progress.start("generate", 4, "shards")
    workers = [threading.Thread(target=progress.advance, args=(1, f"part-{i}")) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert progress._bars is not None and progress._task is not None
    assert progress._bars.tasks[0].completed == 4
    progress.finish("4,000 rows in 4 shards, 1,000 rows/s")
    assert not progress._bars.live.is_started
    assert "generate done in" in text_of(out)


def test_the_pipelines_warnings_reach_the_console_as_lines() -> None:
    out = recording_console()
    logger = logging.getLogger("vae_pipeline.test_console")
    handler = WarningsToConsole(out)
    logger.addHandler(handler)
    try:
        logger.info("not shown")
        logger.warning("column %r is free text: %.1f%% of its values written as null", "notes", 80.0)
    finally:
        logger.removeHandler(handler)
    assert text_of(out) == "warning: column 'notes' is free text: 80.0% of its values written as null\n"


class Roles:
    """What `TableTransform.column_roles()` gives, (role, why) per column, here in another order than the table's."""

    schema = pa.schema([("b [x]", pa.string()), ("a", pa.float64())])

    def column_roles(self) -> dict[str, tuple[str, str]]:
        return {
            "a": ("continuous", "150 distinct values in 272 rows"),
            "notes": ("drop", "data.column_kinds: drop"),
            "b [x]": ("id", "unique per row"),
        }


def test_every_columns_role_and_why_is_a_row_in_the_tables_order() -> None:
    out = recording_console()
    out.print(roles_table(column_roles(Roles())))
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text_of(out).splitlines() if "│" in line]
    assert rows == [
        ["b [x]", "id", "unique per row"],
        ["a", "continuous", "150 distinct values in 272 rows"],
        ["notes", "drop", "data.column_kinds: drop"],
    ]


def _entry(name: str, quality: float, auc: float, ratio: float, ok: bool | None = True) -> dict[str, Any]:
    entry = {
        "name": name,
        "quality": {"score": quality},
        "detection_auc": auc,
        "privacy": {"dcr_ratio": ratio, "exact_copy_share": 0.0125},
    }
    if ok is not None:
        entry["privacy_ok"], entry["privacy_reason"] = ok, None if ok else "too close [DCR]"
    return entry


def test_the_scores_table_puts_the_sampler_used_beside_the_prior_and_real_rows() -> None:
    gmm, prior = _entry("gmm", 0.7241, 0.8738, 3.7034), _entry("prior", 0.7222, 0.9141, 3.66, ok=False)
    report = {"samplers": [gmm, prior], "reference": _entry("real training rows", 0.8423, 0.5573, 1.0, ok=None)}
    out = recording_console()
    out.print(scores_table(report, gmm))
    rows = [line for line in text_of(out).splitlines() if "│" in line]
    cells = [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]
    assert cells == [
        ["gmm (used)", "0.724", "0.874", "3.70", "1.2%", "passes"],
        ["prior", "0.722", "0.914", "3.66", "1.2%", "refused: too close [DCR]"],
        ["real training rows", "0.842", "0.557", "1.00", "1.2%", "-"],
    ]


def test_the_log_file_sits_beside_a_local_model_and_in_the_working_directory_for_a_remote_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    name = f"model-20260102-030405-run-{os.getpid()}.log"
    assert log_file_for(str(tmp_path / "out" / "model"), "run", now) == tmp_path / "out" / "logs" / name
    assert log_file_for(f"file://{tmp_path}/out/model/", "run", now) == tmp_path / "out" / "logs" / name
    monkeypatch.chdir(tmp_path)
    assert log_file_for("s3://bucket/models/model", "run", now) == tmp_path / FALLBACK_LOG_DIR / name
    assert not (tmp_path / "models").exists()


def test_a_model_folder_that_cannot_be_written_beside_logs_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vae_pipeline.logs.os.access", lambda path, mode: False)  # a read-only share, even for root
    assert log_file_for(str(tmp_path / "shared" / "model"), "generate").parent == tmp_path / FALLBACK_LOG_DIR


# A command whose work writes to the file descriptors the way Ray's C++ core, its streamed worker lines and a
# child process do, then fails: one with a user error, one with a crash.
SCRIPT = """
import os, subprocess, sys
import vae_pipeline.cli as cli
from vae_pipeline.console import session
from vae_pipeline.errors import DataError

model_url, failure = sys.argv[1:3]

def command(standalone_mode):
    with session(model_url, "run") as current:
        current.progress.start("train", 3, "epochs")
        os.write(2, b"[E core_worker.cc:2465] Actor with class name\\n")
        print("(RayTrainWorker pid=1) epoch 1/3", flush=True)
        print("Traceback (most recent call last): from a worker", file=sys.stderr, flush=True)
        subprocess.run(["sh", "-c", "echo child on stderr >&2; echo child on stdout"], check=True)
        if failure == "data":
            raise DataError("column 'b' is all null; drop it with data.drop_columns")
        raise RuntimeError("boom\\n  Traceback of a remote task, say\\nlast line of it")

cli.app = command
sys.argv = ["vae-pipeline", "run"]
cli.main()
"""


@pytest.mark.parametrize(
    ("failure", "code", "error"),
    [
        ("data", 3, "error: column 'b' is all null; drop it with data.drop_columns"),
        ("crash", 1, "error: RuntimeError: last line of it (traceback in {log})"),
    ],
)
def test_a_quiet_command_keeps_everything_but_its_own_lines_in_the_log_file(
    tmp_path: Path, failure: str, code: int, error: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "model"), failure],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    (log,) = (tmp_path / "logs").glob("model-*-run-*.log")
    assert result.returncode == code, result.stderr
    assert result.stderr.splitlines() == [error.format(log=log)]
    shown = result.stdout.splitlines()
    assert len(shown) == 3 and shown[:2] == [f"logs: {log}", "train started"]
    assert shown[2].startswith("train failed in ")
    for noise in ("core_worker", "RayTrainWorker", "child on", "Traceback"):
        assert noise not in result.stdout + result.stderr
    logged = log.read_text()
    for line in ("core_worker.cc", "(RayTrainWorker pid=1) epoch 1/3", "child on stderr", "child on stdout"):
        assert line in logged
    assert ("RuntimeError: boom" in logged) == (failure == "crash")  # the crash's traceback is kept for the user
    assert not (tmp_path / "model").exists()
