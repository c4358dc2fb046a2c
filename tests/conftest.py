"""Shared fixtures: the shipped penguins table and small configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PENGUINS = str(REPO / "data" / "penguins.parquet")

# Keep Prefect's ephemeral API and state out of the user's home, and quiet. Prefect creates its home without
# parents, so a fresh clone (no out/ yet) needs the folder made here.
PREFECT_HOME = Path(os.environ.setdefault("PREFECT_HOME", str(REPO / "out" / ".prefect-test")))
PREFECT_HOME.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def penguins_url() -> str:
    return PENGUINS
