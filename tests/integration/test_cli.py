"""The `vae-pipeline` command as a user runs it: a real subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.conftest import PENGUINS, REPO
from tests.integration.conftest import Generated, TrainedModel
from vae_pipeline.bundle import load_bundle, save_bundle
from vae_pipeline.generation.manifest import read_manifest


def vae_pipeline(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "vae_pipeline.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def _write(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


BAD_TABLES = {
    "empty": (pa.table({"a": pa.array([], pa.float64())}), "holds no rows"),
    "all-null": (pa.table({"a": [1.0, 2.0], "b": pa.array([None, None], pa.float64())}), "'b' is all null"),
    "null-typed": (pa.table({"a": [1.0, 2.0], "b": pa.array([None, None])}), "'b' is all null"),
    "list": (pa.table({"a": [1.0, 2.0], "l": [[1, 2], [3]]}), "'l' has unsupported type"),
    "struct": (pa.table({"a": [1.0, 2.0], "s": [{"x": 1}, {"x": 2}]}), "'s' has unsupported type"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_are_one_line_errors_with_no_output(tmp_path: Path, case: str) -> None:
    table, message = BAD_TABLES[case]
    result = vae_pipeline("run", "--input", _write(tmp_path / "in.parquet", table), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 3, message, "drop_columns" if case != "empty" else "non-empty")
    assert not (tmp_path / "out").exists()


def test_missing_input(tmp_path: Path) -> None:
    result = vae_pipeline("run", "--input", str(tmp_path / "nowhere.parquet"), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 3, "nowhere.parquet", "does not exist")
    assert not (tmp_path / "out").exists()


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "in.parquet").write_bytes(b"PAR1 this is not a parquet file")
    result = vae_pipeline("run", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 3, "cannot read", "in.parquet")
    assert not (tmp_path / "out").exists()


def test_label_column_that_does_not_exist(tmp_path: Path) -> None:
    result = vae_pipeline("run", "--input", PENGUINS, "--label", "wingspan", "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 3, "label column 'wingspan'", "species")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ({"trainig": {"epochs": 3}}, ("unknown key 'trainig'",)),
        ({"training": {"epochs": "ten"}}, ("training.epochs", "integer")),
        ({"generation": {"rows": 10, "colour": "red"}}, ("unknown key 'generation.colour'",)),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, config: dict, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = vae_pipeline("run", "--config", str(path), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("step", "settings", "fragments"),
    [
        (
            "train",
            {"training": {"executor": "local", "num_workers": 2}},
            ("training.num_workers is 2", "executor: ray"),
        ),
        ("stats", {"statistics": {"executor": "local", "num_workers": 2}}, ("statistics.num_workers is 2",)),
        ("train", {"training": {"executor": "local"}, "ray": {"address": "127.0.0.1:1"}}, ("ray.address is set",)),
    ],
)
def test_an_impossible_local_executor_is_one_line_and_writes_nothing(
    tmp_path: Path, step: str, settings: dict, fragments: tuple[str, ...]
) -> None:
    path = tmp_path / "config.yaml"
    model = tmp_path / "model"
    path.write_text(yaml.safe_dump({"model_url": str(model), "data": {"input_url": PENGUINS}, **settings}))
    result = vae_pipeline("run", "--config", str(path), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 2, "executor is local, but", *fragments)
    assert not (tmp_path / "out").exists() and not model.exists()  # refused before any step ran


@pytest.mark.slow
def test_statistics_of_another_model_are_refused(trained: TrainedModel, tmp_path: Path) -> None:
    bundle = load_bundle(trained.model_url)
    with torch.no_grad():
        next(bundle.model.parameters()).add_(0.5)
    other = str(tmp_path / "other")
    save_bundle(other, bundle.model, bundle.model_config, bundle.transform, bundle.config, bundle.metrics)
    result = vae_pipeline(
        "generate",
        "--model",
        other,
        "--statistics",
        trained.statistics_url,
        "--output",
        str(tmp_path / "out"),
        "--rows",
        "10",
    )
    assert_one_line_error(result, 5, "belong to model", "vae-pipeline stats")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_output_holding_another_run_is_refused(trained: TrainedModel, generated: Generated, tmp_path: Path) -> None:
    output = generated.copy_to(tmp_path / "out")  # seed 5's run
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    result = vae_pipeline(
        "generate", "--model", trained.model_url, "--output", str(output), "--rows", "10", "--seed", "2"
    )
    assert_one_line_error(result, 4, "already holds another run", "--overwrite")
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_run_generate_and_inspect_from_the_command_line(tmp_path: Path) -> None:
    model, output = tmp_path / "model", tmp_path / "synthetic"
    result = vae_pipeline(
        "run",
        "--input",
        PENGUINS,
        "--output",
        str(output),
        "--rows",
        "2000",
        "--model",
        str(model),
        "--epochs",
        "2",
        "--seed",
        "3",
        "--sampler",
        "gmm",
        "--label",
        "species",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(str(output))
    assert manifest is not None
    assert (manifest.rows, manifest.seed, manifest.sampler["name"]) == (2000, 3, "gmm")
    assert manifest.config["data"]["label_column"] == "species"
    assert "2,000 rows" in result.stdout

    # The same command again: every step is reused, and neither Prefect's server nor Ray is started for it.
    logs_before = set((tmp_path / "logs").glob("*.log"))
    rerun = vae_pipeline("run", *result.args[result.args.index("run") + 1 :])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("reused: ") == 4 and "checksums verified" in rerun.stdout
    (log,) = set((tmp_path / "logs").glob("*.log")) - logs_before
    assert "ray ready" not in log.read_text() and "prefect" not in log.read_text().lower()

    again = vae_pipeline(
        "generate",
        "--model",
        str(model),
        "--output",
        str(tmp_path / "more"),
        "--rows",
        "1500",
        "--seed",
        "4",
        "--sampler",
        "gaussian",
        "--temperature",
        "0.8",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    more = read_manifest(str(tmp_path / "more"))
    assert more is not None and (more.rows, more.seed, more.sampler["name"]) == (1500, 4, "gaussian")
    assert more.extra["evaluation"]["scores"]["name"] == "gaussian@T=0.8"  # the flow evaluated it
    files = sorted(str(p.relative_to(tmp_path / "more")) for p in (tmp_path / "more").rglob("*") if p.is_file())
    assert files == [
        "_lease/000000000001.json",  # the lease the generating driver held, given back
        "_manifest.json",
        "_run.json",
        "_shards/part-00000.json",
        "part-00000.parquet",
    ]

    shown = vae_pipeline("inspect", str(model), "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["model bundle"]["epochs_trained"] == 2
    assert summary["aggregate posterior"]["classes"] == 3
    dataset = json.loads(vae_pipeline("inspect", str(tmp_path / "more"), "--json").stdout)
    assert dataset["synthetic dataset"]["rows"] == 1500
    assert dataset["shards"]["state"] == "committed" and dataset["shards"]["shards_missing_or_damaged"] == []
