"""numeric_kind and DiscreteColumn: hand-computed rules, real tables, exact support and type on decode."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_diabetes

from tests.conftest import REPO
from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError, NotFittedError
from vae_pipeline.transforms import CategoricalColumn
from vae_pipeline.transforms.discrete import (
    DiscreteColumn,
    cut_rank,
    grid_points,
    numeric_decision,
    numeric_kind,
    snap,
)
from vae_pipeline.transforms.profile import ColumnProfile

CONFIG = DataConfig()  # categorical_max_distinct=20, max_categories=1000
CAP = max(CONFIG.categorical_max_distinct, CONFIG.max_categories)
BINS = [17.5, 22.0, 27.0, 32.5, 40.0, 55.0]  # a binned float column: 6 values


def profile(array: pa.Array, *, distinct_cap: int = CAP, reservoir: int = 5000, rows: int = 256) -> ColumnProfile:
    result = ColumnProfile("x", array.type, distinct_cap, reservoir, np.random.default_rng(0))
    for start in range(0, len(array), rows):
        result.update(array.slice(start, rows))
    return result


def discrete(array: pa.Array, **kwargs) -> DiscreteColumn:
    return DiscreteColumn("x", array.type, **kwargs).fit(profile(array), seed=0)


def grid_column(rows: int = 2000, values: int = 60) -> pa.Array:
    """`values` points 0.5 apart (10.0, 10.5, ..., 39.5), bell-shaped frequencies, seeded."""
    rng = np.random.default_rng(3)
    index = np.clip(np.rint(rng.normal(values / 2, values / 6, rows)), 0, values - 1)
    index[:values] = np.arange(values)  # every grid point observed at least once
    return pa.array(10.0 + 0.5 * index)


def noise(column: DiscreteColumn, rows: int = 5000, seed: int = 1) -> np.ndarray:
    """Decoder-like output: any real numbers in every slot."""
    return np.random.default_rng(seed).normal(size=(rows, column.output_width)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ numeric_kind


def test_few_values_are_categorical_whatever_the_numeric_type() -> None:
    for array in (pa.array(BINS * 10), pa.array(BINS * 10, pa.float32()), pa.array(list(range(20)) * 2)):
        assert numeric_decision(profile(array), CONFIG) == (
            "categorical",
            f"{len(set(array.to_pylist()))} distinct values (at most data.categorical_max_distinct=20)",
        )


def test_grid_column_is_discrete_by_its_row_count() -> None:
    # 60 distinct values * 10 <= 2000 rows
    assert numeric_decision(profile(grid_column()), CONFIG) == ("discrete", "60 distinct values in 2000 rows")


def test_coarse_grid_is_discrete_with_few_rows_per_value() -> None:
    # 40 values 0.5 apart in 150 rows: 400 > 150, but the grid has 40 points and 40 * 2 <= 150
    values = 10.0 + 0.5 * (np.arange(150) % 40)
    assert numeric_decision(profile(pa.array(values)), CONFIG) == (
        "discrete",
        "40 distinct values on a grid of 40 points in 150 rows",
    )
    # 40 values 0.5 apart in two runs of 20 with 40 empty points between: a grid of 80 points, 80 * 2 > 150 rows
    points = np.r_[np.arange(20), np.arange(60, 80)]
    spread = pa.array(10.0 + 0.5 * points[np.arange(150) % 40])
    assert numeric_decision(profile(spread), CONFIG) == ("continuous", "40 distinct values in 150 rows")


def test_spread_values_are_continuous() -> None:
    measured = pa.array(np.random.default_rng(0).normal(50, 10, 500))
    assert numeric_decision(profile(measured), CONFIG) == ("continuous", "500 distinct values in 500 rows")
    many = pa.array(np.arange(3000) * 0.5)
    assert numeric_decision(profile(many), CONFIG) == ("continuous", "more than 1000 distinct values")


def test_numeric_kind_needs_the_distinct_values() -> None:
    with pytest.raises(ValueError, match=r"column 'x' collects 0 distinct values.*categorical_max_distinct=20"):
        numeric_kind(profile(pa.array([1.0, 2.0]), distinct_cap=0), CONFIG)


@pytest.mark.parametrize(
    ("values", "points"),
    [
        ([17.5, 22.0, 27.0], 20),  # steps of 4.5 and 5 from 17.5: a grid of 0.5 from 17.5 to 27.0
        ([0.0, 0.5, 1.5], 4),
        ([2700.0, 2725.0, 6300.0], 145),  # multiples of 25 g
        ([3.0], None),
        ([0.123456, 0.5], None),  # more than 4 decimals
    ],
)
def test_grid_points_by_hand(values: list[float], points: int | None) -> None:
    assert grid_points(np.asarray(values)) == points


def test_real_columns_by_hand() -> None:
    """Penguins: bill length continuous (164 values, 0.1 mm over 27.5 mm); the others on a coarse grid."""
    frame = pd.read_parquet(REPO / "data" / "penguins.parquet")
    kinds = {c: numeric_kind(profile(pa.array(frame[c])), CONFIG) for c in frame.select_dtypes("number")}
    assert kinds == {
        "bill_length_mm": "continuous",
        "bill_depth_mm": "discrete",  # 80 values on 85 points of 0.1 mm, 342 rows
        "flipper_length_mm": "discrete",  # 55 whole millimetres on 60 points
        "body_mass_g": "discrete",  # 94 multiples of 25 g on 145 points
        "year": "categorical",
    }


# ------------------------------------------------------------------------------------------------ DiscreteColumn


def test_snap_by_hand() -> None:
    support = np.array([0.0, 1.0, 5.0])  # cuts at 0.5 and 3.0; a tie goes to the lower value
    values = np.array([-3.0, 0.4, 0.5, 0.6, 2.9, 3.0, 3.1, 100.0])
    np.testing.assert_array_equal(snap(values, support), [0, 0, 0, 1, 1, 1, 5, 5])
    np.testing.assert_array_equal(snap(values, np.array([7.0])), [7.0] * 8)


SUPPORTS = {
    "grid": np.arange(0.0, 300.0, 25.0),
    "irregular": np.unique(np.round(np.random.default_rng(0).normal(17, 2, 300), 1)),
    "clustered": np.unique(np.round(np.exp(np.random.default_rng(1).normal(0, 3, 300)), 3)),  # binary search
    "huge": np.array([-1e308, 0.0, 1e308]),  # near the float limits
    "two": np.array([1.0, 2.0]),
    "one": np.array([7.0]),
}


@pytest.mark.parametrize("support", SUPPORTS.values(), ids=SUPPORTS.keys())
def test_cut_rank_is_the_binary_search(support: np.ndarray) -> None:
    """The bucket table ranks exactly as np.searchsorted: on every cut, next to it, beyond the ends, NaN, inf."""
    cuts = (support[:-1] + support[1:]) / 2.0
    rng = np.random.default_rng(2)
    values = np.concatenate(
        [
            np.interp(rng.uniform(0, len(support) - 1, 5_000), np.arange(len(support)), support),  # in between
            cuts,
            np.nextafter(cuts, np.inf),
            np.nextafter(cuts, -np.inf),
            support,
            [np.nan, np.inf, -np.inf, support[0] - 1.0, support[-1] + 1.0],
        ]
    )
    np.testing.assert_array_equal(cut_rank(cuts, values), np.searchsorted(cuts, values))
    np.testing.assert_array_equal(cut_rank(cuts, values[:0]), np.zeros(0, dtype=np.intp))


@pytest.mark.parametrize("arrow_type", [pa.float64(), pa.float32()])
def test_binned_float_column_comes_back_as_exactly_its_bins(arrow_type: pa.DataType) -> None:
    array = pa.array(np.random.default_rng(0).choice(BINS, 300), arrow_type)
    assert numeric_kind(profile(array), CONFIG) == "categorical"
    as_categorical = CategoricalColumn("x", arrow_type).fit(profile(array))
    assert as_categorical.inverse_transform(as_categorical.transform(array)).equals(array)
    column = discrete(array)  # the same column forced discrete writes only the bins too
    assert column.support_ == BINS
    decoded = column.inverse_transform(noise(column))
    assert decoded.type == arrow_type
    assert set(decoded.to_pylist()) == set(BINS)
    assert column.inverse_transform(column.transform(array)).equals(array)


def test_grid_column_decodes_only_support_values() -> None:
    array = grid_column()
    column = discrete(array)
    assert column.support_ == [10.0 + 0.5 * k for k in range(60)]
    assert column.decimals_ is None and not column.rounds
    decoded = column.inverse_transform(noise(column)).to_numpy()
    assert set(decoded) <= set(column.support_)
    assert len(set(decoded)) > 30  # the decoder's spread reaches much of the support, not a few values
    assert column.inverse_transform(column.transform(array)).equals(array)


@pytest.mark.parametrize("arrow_type", [pa.int64(), pa.int16(), pa.uint8(), pa.float32(), pa.decimal128(7, 2)], ids=str)
def test_decoded_values_keep_the_input_type(arrow_type: pa.DataType) -> None:
    rng = np.random.default_rng(5)
    values = rng.choice(np.arange(10, 250, 5), 2000)  # 48 multiples of 5
    array = pa.array(values / 4 if pa.types.is_decimal(arrow_type) else values).cast(arrow_type)
    column = discrete(array)
    decoded = column.inverse_transform(noise(column))
    assert decoded.type == arrow_type
    assert set(decoded.to_pylist()) <= set(array.to_pylist())
    assert column.inverse_transform(column.transform(array)).equals(array)
    state = json.loads(json.dumps(column.state_dict(), allow_nan=False))
    if pa.types.is_integer(arrow_type):
        assert all(isinstance(value, int) for value in state["support_"])


def test_discrete_nulls_use_the_indicator_slot() -> None:
    array = pa.array([1.5, None, 3.0, 1.5, None, 4.5] * 10)
    column = discrete(array)
    assert column.spans(0)[-1].kind == "bernoulli"
    restored = column.inverse_transform(column.transform(array))
    assert restored.equals(array)


def test_discrete_state_dict_round_trip() -> None:
    array = grid_column()
    column = discrete(array)
    state = json.loads(json.dumps(column.state_dict(), allow_nan=False))
    assert state["kind"] == "discrete" and state["support_"] == column.support_
    rebuilt = DiscreteColumn.from_state_dict(state)
    assert rebuilt.spans(4) == column.spans(4)
    np.testing.assert_array_equal(rebuilt.transform(array), column.transform(array))
    block = noise(column)
    assert rebuilt.inverse_transform(block).equals(column.inverse_transform(block))
    assert rebuilt.inverse_transform(np.asfortranarray(block)).equals(column.inverse_transform(block))


def test_point_masses_of_a_discrete_column_are_in_its_support() -> None:
    rng = np.random.default_rng(2)
    values = np.where(rng.random(3000) < 0.6, 0.0, rng.integers(1, 50, 3000) * 0.25)  # 60% zeros, 49 more values
    column = discrete(pa.array(values))
    assert column.point_masses_ == [0.0]
    decoded = column.inverse_transform(column.transform(pa.array(values))).to_numpy()
    np.testing.assert_array_equal(decoded, values)


def test_too_many_values_for_a_discrete_column() -> None:
    array = pa.array(np.arange(30) * 1.0)
    with pytest.raises(DataError, match=r"column 'x' has more than 10 distinct.*column_kinds: \{x: continuous\}"):
        DiscreteColumn("x", array.type).fit(profile(array, distinct_cap=10))


def test_discrete_not_fitted_says_to_call_fit() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        DiscreteColumn("x", pa.float64()).inverse_transform(np.zeros((1, 2)))


def test_real_discrete_column_diabetes_age() -> None:
    """Diabetes ages: 58 whole years on a grid of 61 in 442 rows, stored as floats."""
    age = pa.array(load_diabetes(scaled=False, as_frame=True).frame["age"])
    assert numeric_kind(profile(age), CONFIG) == "discrete"
    column = discrete(age)
    decoded = column.inverse_transform(noise(column)).to_numpy()
    assert decoded.dtype == np.float64 and set(decoded) <= set(age.to_pylist())
    assert column.inverse_transform(column.transform(age)).equals(age)
