"""`vae-pipeline run` as a user sees it: steps, a summary, one-line errors; Ray and Prefect in a log file.

Each test is a real subprocess that starts Prefect's temporary server and a local Ray instance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import QUICK_EVALUATION, tiny_config

pytestmark = pytest.mark.slow

# What a successful or failed run used to print on the terminal, and must now keep in its log file.
INTERNALS = ("core_worker", "SplitCoordinator", "Token authentication", "telemetry", "Traceback", "Starting temporary")


def run_cli(config_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vae_pipeline.cli", "run", "--config", str(config_path), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def write_config(root: Path, **training: object) -> Path:
    config = tiny_config(
        root,
        training={"epochs": 3, "num_workers": 1, **training},
        sampler={"name": "auto"},  # the evaluation's choice, as a user gets it
        evaluation=QUICK_EVALUATION,
        generation={"rows": 2000, "rows_per_shard": 1000, "num_workers": 1},
    )
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_json()))
    return path


def log_file(root: Path, stdout: str) -> Path:
    """The one log file of the run: beside the model (root/model), its path the first line on stdout."""
    (path,) = (root / "logs").glob("model-*-run-*.log")
    assert stdout.splitlines()[0] == f"logs: {path}"
    return path


def test_a_run_shows_its_steps_and_a_summary_and_keeps_ray_and_prefect_in_the_log_file(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, executor="ray"))  # on Ray, whose lines must stay off the console
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout
    assert result.stderr == ""
    for internal in INTERNALS:
        assert internal not in shown, internal

    for step, figures in (
        ("train", "3 epochs, best val loss "),
        ("statistics", " training rows, "),
        ("evaluate", " candidates, chose "),
        ("generate", "2,000 rows in 2 shards, "),
    ):
        assert f"{step} started" in shown
        done = next(line for line in shown.splitlines() if line.startswith(f"{step} done in "))
        assert figures in done, done

    # The summary: the sampler chosen, its scores beside the prior's, the report and plots, the output, the roles.
    evaluation = tmp_path / "model" / "evaluation"
    assert "sampler: " in shown and "the evaluation's choice: highest composite score" in shown
    assert "(used)" in shown and "│ prior " in shown and "│ real training rows " in shown
    assert f"evaluation report: {evaluation / 'report.md'}" in shown
    assert str(evaluation / "plots" / "marginals.png") in shown
    assert f"synthetic dataset: {tmp_path / 'synthetic'} (2,000 rows in 2 shards" in shown
    roles = [line for line in shown.splitlines() if line.startswith("│ ")]
    for column in ("species", "island", "bill_length_mm", "body_mass_g", "sex", "year"):
        assert any(line.startswith(f"│ {column} ") and "│" in line[3:] for line in roles), column

    logged = log_file(tmp_path, shown).read_text()
    assert "Beginning flow run" in logged  # Prefect's
    assert "RayTrainWorker" in logged and "Starting execution of Dataset" in logged  # Ray's, streamed to the driver
    assert "epoch 3/3 reported" in logged  # what fed the epoch bar
    assert "telemetry" not in logged  # Prefect's telemetry is off, not merely hidden


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_a_failed_run_ends_with_its_one_line_error(tmp_path: Path, verbose: bool) -> None:
    # No GPUs to be had: the train step fails with a ConfigError after Prefect and Ray have started.
    config = write_config(tmp_path, use_gpu=True)
    result = run_cli(config, *(["--verbose"] if verbose else []), CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith("error: use_gpu is true but the Ray cluster has 0 GPU(s)")
    assert "train failed in " in result.stdout
    if verbose:  # Ray's and Prefect's logs as they come, Prefect's traceback included, and no log file
        assert "Beginning flow run" in result.stderr and "Traceback" in result.stderr
        assert not (tmp_path / "logs").exists()
    else:
        assert len(errors) == 1
        for internal in INTERNALS:
            assert internal not in result.stdout + result.stderr, internal
        logged = log_file(tmp_path, result.stdout).read_text()
        assert "Beginning flow run" in logged and "Traceback" in logged
    assert not (tmp_path / "model").exists() and not (tmp_path / "synthetic").exists()
