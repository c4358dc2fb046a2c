"""Shared by the evaluation unit tests: the penguins table (data/penguins.csv) and its column kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[3]
PENGUIN_KINDS = {
    "species": "categorical",
    "island": "categorical",
    "bill_length_mm": "continuous",
    "bill_depth_mm": "continuous",
    "flipper_length_mm": "continuous",
    "body_mass_g": "continuous",
    "sex": "categorical",
    "year": "categorical",
}


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return pd.read_csv(REPO / "data" / "penguins.csv")


def split(frame: pd.DataFrame, parts: int, seed: int = 0) -> list[pd.DataFrame]:
    """Disjoint random parts (the CSV alternates sexes, so an odd/even split is not random)."""
    order = np.random.default_rng(seed).permutation(len(frame))
    return [frame.iloc[index].reset_index(drop=True) for index in np.array_split(order, parts)]
