"""split.py: per-row keys and split codes that depend on row content and seed only, never on batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_pipeline.split import Split, assign_splits, row_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def penguins() -> pa.Table:
    return pq.read_table(REPO / "data" / "penguins.parquet")


def synthetic(rows: int, seed: int) -> pa.Table:
    """Distinct rows: a float, a nullable int, a string with nulls, a bool, a dictionary column."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 1000, rows)
    return pa.table(
        {
            "x": pa.array(rng.normal(size=rows)),
            "n": pa.array([None if i % 7 == 0 else int(v) for i, v in enumerate(ints)], type=pa.int64()),
            "s": pa.array([None if i % 5 == 0 else f"s{i % 13}" for i in range(rows)], type=pa.string()),
            "b": pa.array(rng.random(rows) < 0.5),
            "d": pa.array([f"c{i % 3}" for i in range(rows)]).dictionary_encode(),
        }
    )


def _keys_by_batches(table: pa.Table, seed: int, chunk: int) -> np.ndarray:
    return np.concatenate([row_keys(batch, seed) for batch in table.to_batches(max_chunksize=chunk)])


def test_row_keys_shape_and_dtype(penguins: pa.Table) -> None:
    keys = row_keys(penguins, seed=0)
    assert keys.shape == (344,)
    assert keys.dtype == np.uint64


def test_row_keys_deterministic(penguins: pa.Table) -> None:
    np.testing.assert_array_equal(row_keys(penguins, seed=3), row_keys(penguins, seed=3))


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_row_keys_independent_of_batch_boundaries(penguins: pa.Table, chunk: int) -> None:
    np.testing.assert_array_equal(row_keys(penguins, seed=0), _keys_by_batches(penguins, 0, chunk))


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_row_keys_batch_invariant_with_nullable_ints_strings_dictionaries(chunk: int) -> None:
    table = synthetic(200, seed=1)
    assert table.column("n").null_count > 0 and table.column("s").null_count > 0
    np.testing.assert_array_equal(row_keys(table, seed=5), _keys_by_batches(table, 5, chunk))


def test_row_keys_nullable_int_batch_with_and_without_nulls() -> None:
    """A batch whose int column has no nulls and one where it does must agree on the shared row."""
    with_null = pa.table({"n": pa.array([None, 42], type=pa.int64())})
    without = pa.table({"n": pa.array([42], type=pa.int64())})
    assert row_keys(with_null, 0)[1] == row_keys(without, 0)[0]


def test_row_keys_independent_of_row_order(penguins: pa.Table) -> None:
    order = np.random.default_rng(0).permutation(penguins.num_rows)
    np.testing.assert_array_equal(row_keys(penguins.take(order), 0), row_keys(penguins, 0)[order])


def test_row_keys_depend_on_seed(penguins: pa.Table) -> None:
    a, b = row_keys(penguins, seed=0), row_keys(penguins, seed=1)
    assert (a != b).all()


def test_row_keys_differ_when_columns_are_swapped() -> None:
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    swapped = table.select(["b", "a"])
    assert (row_keys(table, 0) != row_keys(swapped, 0)).all()


def test_row_keys_distinguish_values() -> None:
    table = pa.table({"a": [1.0, 2.0, 1.0], "s": ["x", "x", "y"]})
    keys = row_keys(table, 0)
    assert len(set(keys.tolist())) == 3


def test_null_string_differs_from_empty_string() -> None:
    keys = row_keys(pa.table({"s": pa.array([None, ""], type=pa.string())}), 0)
    assert keys[0] != keys[1]


def test_identical_rows_get_identical_keys_and_splits(penguins: pa.Table) -> None:
    doubled = pa.concat_tables([penguins, penguins])
    keys = row_keys(doubled, 0)
    np.testing.assert_array_equal(keys[:344], keys[344:])
    codes = assign_splits(doubled, 0, 0.2, 0.2)
    np.testing.assert_array_equal(codes[:344], codes[344:])


def test_assign_splits_shares_close_to_requested() -> None:
    table = synthetic(5000, seed=2)
    codes = assign_splits(table, seed=0, validation_fraction=0.1, holdout_fraction=0.2)
    assert codes.dtype == np.int8
    assert set(np.unique(codes).tolist()) == {Split.TRAIN, Split.VALIDATION, Split.HOLDOUT}
    shares = np.bincount(codes, minlength=3) / len(codes)
    # Binomial standard error at n=5000 is under 0.006; allow about four of them.
    np.testing.assert_allclose(shares, [0.7, 0.1, 0.2], atol=0.025)


def test_assign_splits_zero_fractions_is_all_train(penguins: pa.Table) -> None:
    assert (assign_splits(penguins, 0, 0.0, 0.0) == Split.TRAIN).all()


def test_assign_splits_batch_invariant(penguins: pa.Table) -> None:
    whole = assign_splits(penguins, 11, 0.1, 0.1)
    parts = np.concatenate([assign_splits(b, 11, 0.1, 0.1) for b in penguins.to_batches(max_chunksize=7)])
    np.testing.assert_array_equal(whole, parts)


def test_assign_splits_nested_holdout_is_stable_when_validation_grows(penguins: pa.Table) -> None:
    """Holdout depends only on holdout_fraction: growing validation never moves a row into or out of holdout."""
    a = assign_splits(penguins, 0, 0.1, 0.15)
    b = assign_splits(penguins, 0, 0.3, 0.15)
    np.testing.assert_array_equal(a == Split.HOLDOUT, b == Split.HOLDOUT)
    assert ((a == Split.VALIDATION) <= (b != Split.TRAIN)).all()


@pytest.mark.parametrize(
    "column",
    [
        pa.array([2**53, 2**53 + 1, None], type=pa.int64()),
        pa.array([2**63 + 5, 1, None], type=pa.uint64()),
        pa.array([1_704_110_400_123_456_789, 1_704_110_400_123_456_790, None], type=pa.int64()).view(
            pa.timestamp("ns")
        ),
    ],
    ids=["int64-id", "uint64", "timestamp-ns"],
)
def test_row_keys_large_integers_and_nanosecond_timestamps(column: pa.Array) -> None:
    table = pa.table({"c": column})
    keys = row_keys(table, 0)
    assert len(set(keys.tolist())) == 3  # distinct values (and null) give distinct keys
    np.testing.assert_array_equal(keys, _keys_by_batches(table, 0, 1))
