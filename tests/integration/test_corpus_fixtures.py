"""The default flow on the hardest tables of the robustness corpus (benchmarks/corpus.py), as a user runs it.

Each fixture is a small real table (tests/fixtures/README.md: source and license). The command is the one a new
user types, `vae-pipeline run --input TABLE --output OUT --rows N`, with only the epochs lowered: no config, no
column kinds. It must end in a committed manifest whose rows keep the input's columns, in order, with their types.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from vae_pipeline.config import DataConfig
from vae_pipeline.data import open_source
from vae_pipeline.generation.manifest import read_manifest

FIXTURES = REPO / "tests" / "fixtures"
ROWS = 200

# fixture -> (file, what makes it hard)
CASES = {
    "penguins_raw": ("penguins_raw.csv", "ids, constant columns, dates, free text, nulls"),
    "airports": ("airports.csv", "an id, near-unique names, a long-tail category, nulls"),
    "seattle_weather": ("seattle_weather.csv", "dates as text, a zero-heavy column"),
    "maternal_health": ("maternal_health.csv", "85% of rows repeat another exactly"),
}

# A failure that is a known gap another helper of issue 10 is closing, by fixture; the lead removes an entry once
# that work lands (strict=False: a pass is reported as XPASS, not an error).
pytestmark = pytest.mark.slow


def run_default_flow(table: Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    command = [
        sys.executable, "-m", "vae_pipeline.cli", "run", "--input", str(table), "--output", str(root / "synthetic"),
        "--model", str(root / "model"), "--rows", str(ROWS), "--epochs", "1",
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    return lines[-1] if lines else stderr[-2000:]


@pytest.mark.parametrize("name", list(CASES))
def test_default_flow_commits_a_manifest(tmp_path: Path, name: str) -> None:
    table = FIXTURES / CASES[name][0]
    result = run_default_flow(table, tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}: {_error_line(result.stderr)}"
    output = tmp_path / "synthetic"
    manifest = read_manifest(str(output))
    assert manifest is not None, "no committed manifest"
    assert manifest.rows == ROWS
    synthetic = pa.concat_tables([pq.read_table(output / shard.name) for shard in manifest.shards])
    assert synthetic.num_rows == ROWS
    expected = open_source(DataConfig(input_url=str(table))).schema
    assert synthetic.schema.names == expected.names
    assert [field.type for field in synthetic.schema] == [field.type for field in expected]
