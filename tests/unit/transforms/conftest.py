"""Shared tiny tables for the transform tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import REPO
from vae_pipeline.config import DataConfig


@pytest.fixture(scope="session")
def penguins() -> pa.Table:
    """344 rows: 3 strings (with nulls in 'sex'), 4 floats with nulls, 'year' an int with 3 values."""
    # The shipped CSV, read as the palmerpenguins package reads it (pandas: float columns with NaN for missing).
    return pa.Table.from_pandas(pd.read_csv(REPO / "data" / "penguins.csv"), preserve_index=False)


@pytest.fixture()
def config() -> DataConfig:
    return DataConfig(fit_sample_rows=500, max_modes=5)


@pytest.fixture(scope="session")
def mixed() -> pa.Table:
    """One column of each supported kind, 60 rows, seeded."""
    rng = np.random.default_rng(7)
    n = 60
    colours = rng.choice(["red", "green", "blue"], n)
    return pa.table(
        {
            "f64": pa.array(rng.normal(10.0, 2.0, n)),
            "f32": pa.array(rng.normal(-3.0, 0.5, n).astype(np.float32)),
            "few_ints": pa.array(rng.integers(0, 4, n).astype(np.int16)),
            "many_ints": pa.array(rng.integers(-500, 500, n)),
            "text": pa.array(colours.tolist(), type=pa.string()),
            "big_text": pa.array(colours.tolist(), type=pa.large_string()),
            "flag": pa.array(rng.random(n) < 0.3),
            "coded": pa.array(colours.tolist()).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string())),
            "day": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 400, n)]),
            "stamp": pa.array(rng.integers(1_600_000_000, 1_700_000_000, n) * 1_000_000)
            .cast(pa.int64())
            .view(pa.timestamp("us", tz="UTC")),
            "price": pa.array(np.round(rng.uniform(1, 100, n), 2)).cast(pa.decimal128(7, 2)),
        }
    )
