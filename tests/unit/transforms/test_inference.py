"""Kind inference, streaming profiles and the DataErrors raised while fitting a TableTransform."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.transforms import TableTransform
from vae_pipeline.transforms.profile import ColumnProfile
from vae_pipeline.transforms.value_stats import ValueStats

CONFIG = DataConfig(fit_sample_rows=100, max_modes=3, categorical_max_distinct=4, max_categories=5)


def fit(table: pa.Table, config: DataConfig = CONFIG) -> TableTransform:
    return TableTransform.fit(table.to_batches(max_chunksize=2), table.schema, config)


@pytest.mark.parametrize(("distinct", "kind"), [(4, "categorical"), (5, "discrete")])
def test_integer_kind_depends_on_distinct_count(distinct: int, kind: str) -> None:
    table = pa.table({"n": pa.array([i % distinct for i in range(11)], type=pa.int32())})
    transform = fit(table)
    assert transform.column_kinds() == {"n": kind}
    restored = transform.inverse_transform(transform.transform(table)).column("n")
    assert restored.type == pa.int32()
    if kind == "categorical":
        assert restored.to_pylist() == table.column("n").to_pylist()


def test_label_column_is_categorical_even_with_many_integers() -> None:
    table = pa.table({"y": pa.array([i % 5 for i in range(10)]), "x": pa.array(np.arange(10.0))})
    transform = fit(table, CONFIG.model_copy(update={"label_column": "y"}))
    assert transform.column_kinds()["y"] == "categorical"
    assert transform.label_classes == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array([[1, 2], [3]]), r"column 'bad' has type list<item: int64>.*drop_columns"),
        (pa.array([{"a": 1}, {"a": 2}]), r"column 'bad' has type struct<a: int64>.*drop_columns"),
        (pa.array([b"x", b"y"]), r"column 'bad' has type binary.*drop_columns"),
        (pa.array([None, None]), r"column 'bad' has only nulls.*drop_columns"),
        (pa.array([None, None], type=pa.string()), r"column 'bad' has only nulls.*drop_columns"),
        (pa.array([None, None], type=pa.float64()), r"column 'bad' has only nulls.*drop_columns"),
    ],
    ids=["list", "struct", "binary", "null_type", "null_strings", "null_floats"],
)
def test_bad_columns_are_named(column: pa.Array, message: str) -> None:
    good = pa.array(np.arange(len(column), dtype=np.float64))
    with pytest.raises(DataError, match=message):
        fit(pa.table({"good": good, "bad": column}))


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"column_kinds": {"missing": "continuous"}}, r"'missing'.*available columns: \['n', 's'\]"),
        ({"label_column": "missing"}, r"'missing'.*available columns"),
        ({"column_kinds": {"s": "continuous"}}, r"column 's' has type string, which cannot be continuous"),
        ({"label_column": "n", "column_kinds": {"n": "continuous"}}, r"column 'n' is data.label_column"),
    ],
)
def test_bad_config_names_the_column(update: dict, message: str) -> None:
    table = pa.table({"n": pa.array([1, 2, 3]), "s": pa.array(["a", "b", "a"])})
    with pytest.raises(DataError, match=message):
        fit(table, CONFIG.model_copy(update=update))


def test_transform_errors_name_the_column() -> None:
    table = pa.table({"n": pa.array([1.0, 2.0, 3.0]), "s": pa.array(["a", "b", "a"])})
    transform = fit(table)
    with pytest.raises(DataError, match=r"column 's'.*'c'"):
        transform.transform(pa.table({"n": pa.array([1.0]), "s": pa.array(["c"])}))
    with pytest.raises(DataError, match="lacks column 's'"):
        transform.transform(pa.table({"n": pa.array([1.0])}))
    with pytest.raises(DataError, match=r"column 'n' has type int64"):
        transform.transform(pa.table({"n": pa.array([1]), "s": pa.array(["a"])}))


def test_no_rows_is_an_error() -> None:
    table = pa.table({"n": pa.array([], type=pa.float64())})
    with pytest.raises(DataError, match="no rows"):
        fit(table)


def test_reservoir_is_bounded_and_ignores_batching() -> None:
    values = np.random.default_rng(3).normal(size=1_000)
    samples = []
    for rows in (1_000, 7, 64):
        profile = ColumnProfile("x", pa.float64(), 0, 100, np.random.default_rng(11))
        array = pa.array(values)
        for start in range(0, len(values), rows):
            profile.update(array.slice(start, rows))
        assert (profile.rows, profile.minimum, profile.maximum) == (1_000, values.min(), values.max())
        samples.append(profile.sample())
    assert len(samples[0]) == 100 and set(samples[0]) <= set(values)
    np.testing.assert_array_equal(samples[0], samples[1])
    np.testing.assert_array_equal(samples[0], samples[2])


def test_distinct_counter_stops_at_its_cap() -> None:
    profile = ColumnProfile("x", pa.int64(), 3, 0, np.random.default_rng(0))
    for start in range(0, 100, 10):
        profile.update(pa.array(np.arange(start, start + 10)))
    assert profile.overflowed and profile.n_distinct <= 4


@pytest.mark.parametrize("rows", [1, 7, 1_000])
def test_value_stats_ignore_batching(rows: int) -> None:
    values = [f"k{v:03d}" for v in np.random.default_rng(5).integers(0, 400, 1_000)] + ["2020-01-01", None]
    array = pa.array(values)
    whole = ValueStats(50, 300, 40, np.random.default_rng(2), strings=True)
    whole.update(array)
    streamed = ValueStats(50, 300, 40, np.random.default_rng(2), strings=True)
    for start in range(0, len(array), rows):
        streamed.update(array.slice(start, rows).drop_null())
    for stats in (whole, streamed):
        assert (len(stats.counts), stats.hash_overflowed, stats.tail_max) == (50, True, 399)
        assert stats.shapes == {"k000": [1_000, values[0]], "0000-00-00": [1, "2020-01-01"]}
    assert streamed.counts == whole.counts and streamed.uncounted == whole.uncounted
    assert (streamed.hashed, streamed.distinct_share, streamed.singleton_share) == (
        whole.hashed,
        whole.distinct_share,
        whole.singleton_share,
    )
    assert streamed.first_repeat == whole.first_repeat == next(v for i, v in enumerate(values) if v in values[:i])
    assert streamed.sample() == whole.sample() and len(whole.sample()) == 40


def test_value_stats_measure_uniqueness_exactly_below_the_cap() -> None:
    stats = ValueStats(10, 1_000, 0, np.random.default_rng(0), strings=False)
    stats.update(pa.array([1, 2, 3, 3, 4, 5, 5, 5]))
    assert (stats.n_hashed_distinct, stats.hashed, stats.first_repeat, stats.maximum) == (5, 8, 3, 5)
    assert stats.distinct_share == 5 / 8 and stats.singleton_share == 3 / 8
    assert stats.counts == {1: 1, 2: 1, 3: 2, 4: 1, 5: 3} and stats.counts_complete


def test_float_columns_collect_their_distinct_values() -> None:
    table = pa.table({"binned": pa.array([17.5, 22.0, 27.0] * 10)})
    transform = fit(table, CONFIG.model_copy(update={"categorical_max_distinct": 2}))
    assert transform.column_kinds() == {"binned": "discrete"}
    assert sorted(set(transform.inverse_transform(transform.transform(table)).column("binned").to_pylist())) == [
        17.5,
        22.0,
        27.0,
    ]
