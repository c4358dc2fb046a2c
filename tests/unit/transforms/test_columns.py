"""ContinuousColumn and CategoricalColumn on tiny handmade columns with hand-computed expectations."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from vae_pipeline.errors import DataError, NotFittedError
from vae_pipeline.layout import Span
from vae_pipeline.transforms import COLUMN_TRANSFORMS, CategoricalColumn, ColumnTransform, ContinuousColumn
from vae_pipeline.transforms.base import row_argmax
from vae_pipeline.transforms.profile import ColumnProfile


def profile(array: pa.Array, *, distinct_cap: int = 0, reservoir: int = 0, rows: int = 2) -> ColumnProfile:
    """A profile of `array` fed in batches of `rows` (5 values in batches of 2 leaves a remainder of 1)."""
    result = ColumnProfile("x", array.type, distinct_cap, reservoir, np.random.default_rng(0))
    for start in range(0, len(array), rows):
        result.update(array.slice(start, rows))
    return result


def categorical(array: pa.Array) -> CategoricalColumn:
    return CategoricalColumn("x", array.type).fit(profile(array, distinct_cap=1000))


def continuous(array: pa.Array, **kwargs) -> ContinuousColumn:
    return ContinuousColumn("x", array.type, **kwargs).fit(profile(array, reservoir=1000), seed=0)


def test_categorical_one_hot_by_hand() -> None:
    column = categorical(pa.array(["b", None, "a", "b", "c"]))
    assert column.categories_ == ["a", "b", "c", None]  # sorted, null last
    block = column.transform(pa.array(["c", None, "a"]))
    np.testing.assert_array_equal(block, [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    assert column.spans(7) == [Span("softmax", 7, 11, "x")]


@pytest.mark.parametrize(
    "array",
    [
        pa.array(["b", None, "a", "b", "c"], type=pa.large_string()),
        pa.array([True, False, None, True, True]),
        pa.array([3, 10, -1, None, 3], type=pa.int8()),
        pa.array([2, 1, 1, 2, 1], type=pa.uint32()),
        pa.array(["y", "x", None, "x", "y"]).dictionary_encode(),
        pa.array(["y", "x", "z", "x", "y"]).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string(), True)),
        pa.array([0.5, 1.5, None, 0.5, 1.5]),
        pa.array([18262, 18263, None, 18262, 18262], type=pa.int32()).view(pa.date32()),
    ],
    ids=["large_string", "bool", "int8", "uint32", "dictionary", "ordered_dictionary_int8", "float", "date32"],
)
def test_categorical_round_trip_is_exact(array: pa.Array) -> None:
    column = categorical(array)
    restored = column.inverse_transform(column.transform(array))
    assert restored.type == array.type
    assert restored.to_pylist() == array.to_pylist()
    json.dumps(column.state_dict(), allow_nan=False)


def test_categorical_keeps_booleans_apart_from_ints() -> None:
    column = categorical(pa.array([True, False, True]))
    state = json.loads(json.dumps(column.state_dict()))
    assert state["categories_"] == [False, True]
    assert all(isinstance(value, bool) for value in state["categories_"])


def test_categorical_inverse_takes_argmax() -> None:
    column = categorical(pa.array(["a", "b", None]))
    block = np.array([[0.2, 0.7, 0.1], [0.1, 0.2, 0.6], [0.9, 0.0, 0.5]], dtype=np.float32)
    assert column.inverse_transform(block).to_pylist() == ["b", None, "a"]


def test_categorical_unseen_category_names_column_and_value() -> None:
    column = categorical(pa.array(["a", "b"]))
    with pytest.raises(DataError, match=r"column 'x'.*'zebra'"):
        column.transform(pa.array(["a", "zebra"]))
    with pytest.raises(DataError, match="column 'x' has 1 nulls"):
        column.transform(pa.array(["a", None]))


def test_categorical_too_many_values() -> None:
    array = pa.array([str(i) for i in range(12)])
    with pytest.raises(DataError, match=r"column 'x' has more than 10 distinct.*column_kinds"):
        CategoricalColumn("x", array.type, max_categories=10).fit(profile(array, distinct_cap=10))


def test_continuous_constant_column() -> None:
    array = pa.array([5, 5, 5, 5, 5], type=pa.int32())
    column = continuous(array)
    assert (column.means_, column.stds_) == ([5.0], [0.0])
    block = column.transform(array)
    np.testing.assert_array_equal(block, [[0.0, 1.0]] * 5)
    assert column.inverse_transform(block * 0.3).to_pylist() == [5] * 5


def test_continuous_two_clusters_get_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 200), rng.normal(100, 1, 200)])
    column = continuous(pa.array(values), max_modes=5)
    assert len(column.means_) == 2
    assert sorted(round(mean) for mean in column.means_) == [0, 100]
    block = column.transform(pa.array([0.0, 100.0]))
    assert np.argmax(block[0, 1:]) != np.argmax(block[1, 1:])
    assert np.abs(block[:, 0]).max() < 0.1  # near each mode's mean, alpha = (x - mean) / (4 std) is small


def test_continuous_alpha_by_hand() -> None:
    column = ContinuousColumn("x", pa.float64())
    column.load_state_dict(
        {
            "kind": "continuous",
            "weights_": [1.0],
            "means_": [10.0],
            "stds_": [2.0],
            "minimum_": 0.0,
            "maximum_": 20.0,
            "has_nulls_": False,
            "decimals_": None,
        }
    )
    block = column.transform(pa.array([10.0, 14.0, 100.0]))
    np.testing.assert_allclose(block[:, 0], [0.0, 0.5, 0.99])  # (14 - 10) / (4 * 2) = 0.5; clipped
    decoded = column.inverse_transform(np.array([[0.5, 1.0], [-2.0, 1.0], [1.0, 1.0]]))
    assert decoded.to_pylist() == [14.0, 2.0, 18.0]  # alpha clipped to [-1, 1]


def test_continuous_nulls_use_an_indicator_slot() -> None:
    array = pa.array([1.0, None, 3.0, 2.0, None, 4.0, 2.5])
    column = continuous(array)
    n_modes = len(column.means_)
    null_slot = 4 + 1 + n_modes
    assert column.spans(4) == [
        Span("gaussian", 4, 5, "x", null_slot),
        Span("softmax", 5, 5 + n_modes, "x", null_slot),
        Span("bernoulli", null_slot, null_slot + 1, "x"),
    ]
    block = column.transform(array)
    np.testing.assert_array_equal(block[1], np.r_[np.zeros(1 + n_modes), 1.0])
    restored = column.inverse_transform(block)
    assert restored.is_null().to_pylist() == array.is_null().to_pylist()
    np.testing.assert_allclose(restored.to_numpy(zero_copy_only=False), array.to_numpy(zero_copy_only=False), atol=1e-5)


def test_continuous_rejects_nulls_not_seen_in_training() -> None:
    column = continuous(pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(DataError, match="column 'x' has 1 nulls"):
        column.transform(pa.array([1.0, None]))


def test_continuous_decoding_clips_to_training_range_and_rounds_integers() -> None:
    array = pa.array(np.arange(0, 100, 3), type=pa.int64())
    column = continuous(array)
    width = column.output_width
    extremes = np.zeros((2, width))
    extremes[:, 0] = [-1.0, 1.0]
    extremes[:, 1] = 1.0
    decoded = column.inverse_transform(extremes)
    assert decoded.type == pa.int64()
    assert min(decoded.to_pylist()) >= 0 and max(decoded.to_pylist()) <= 99


def test_nan_values_are_refused() -> None:
    array = pa.array([1.0, np.nan, 2.0], from_pandas=False)
    with pytest.raises(DataError, match="column 'x' has 1 NaN"):
        profile(array, reservoir=10)


@pytest.mark.parametrize("kind", sorted(COLUMN_TRANSFORMS))
def test_not_fitted_says_to_call_fit(kind: str) -> None:
    column: ColumnTransform = COLUMN_TRANSFORMS[kind]("x", pa.float64())
    for use in (
        lambda: column.transform(pa.array([1.0])),
        lambda: column.inverse_transform(np.zeros((1, 2))),
        column.state_dict,
        lambda: column.spans(0),
    ):
        with pytest.raises(NotFittedError, match="call fit"):
            use()


@pytest.mark.parametrize("kind", sorted(COLUMN_TRANSFORMS))
def test_all_null_column_is_refused(kind: str) -> None:
    array = pa.array([None, None, None], type=pa.float64())
    with pytest.raises(DataError, match=r"column 'x' has only nulls.*drop_columns"):
        COLUMN_TRANSFORMS[kind]("x", array.type).fit(profile(array, distinct_cap=10, reservoir=10))


@pytest.mark.parametrize(
    "array",
    [pa.array([1.5, None, 3.25, 8.0, 2.0]), pa.array(["q", "p", None, "q", "r"])],
    ids=["continuous", "categorical"],
)
def test_column_state_dict_round_trip(array: pa.Array) -> None:
    kind = "continuous" if pa.types.is_floating(array.type) else "categorical"
    column = continuous(array) if kind == "continuous" else categorical(array)
    rebuilt = COLUMN_TRANSFORMS[kind].from_state_dict(json.loads(json.dumps(column.state_dict(), allow_nan=False)))
    np.testing.assert_array_equal(rebuilt.transform(array), column.transform(array))
    assert rebuilt.spans(3) == column.spans(3)


@pytest.mark.parametrize(
    ("values", "decimals"), [([1.0, 2.0, 7.0], 0), ([39.1, 40.25, 18.7], 2), ([0.1234567, 2.0], None)]
)
def test_float_columns_decode_with_the_precision_they_were_written_with(
    values: list[float], decimals: int | None
) -> None:
    column = continuous(pa.array(values * 20))
    assert column.decimals_ == decimals
    decoded = column.inverse_transform(column.transform(pa.array(values)) + 0.0013).to_numpy()
    if decimals is not None:
        np.testing.assert_array_equal(decoded, np.round(decoded, decimals))


# ------------------------------------------------------------------ row_argmax (the inverse transforms' argmax)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("width", [1, 2, 5, 300])
def test_row_argmax_matches_numpy(width: int, order: str) -> None:
    block = np.asarray(np.random.default_rng(width).normal(size=(1_000, width)).astype(np.float32), order=order)
    np.testing.assert_array_equal(row_argmax(block), np.argmax(block, axis=1))
    assert row_argmax(block).dtype == np.int64


def test_row_argmax_takes_the_first_of_ties_and_skips_nan() -> None:
    block = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.0, 0.0, 1.0], [np.nan, 0.5, 0.2], [0.1, np.nan, 0.3]])
    assert row_argmax(np.asfortranarray(block)).tolist() == [0, 1, 2, 1, 2]


def test_one_hot_blocks_in_column_major_decode_like_row_major() -> None:
    codes = np.random.default_rng(0).integers(0, 4, size=5_000)
    block = np.eye(4, dtype=np.float32)[codes]
    column = categorical(pa.array(["a", "b", "c", "d"]))
    assert column.inverse_transform(np.asfortranarray(block)).equals(column.inverse_transform(block))
    assert column.inverse_transform(block).to_pylist() == [["a", "b", "c", "d"][c] for c in codes]


def test_continuous_inverse_is_the_same_for_column_major_blocks() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 500), rng.normal(50, 5, 500)]).round(2)
    column = continuous(pa.array(values), max_modes=4)
    assert column.output_width >= 3  # alpha and at least two modes
    block = rng.normal(size=(2_000, column.output_width)).astype(np.float32)
    decoded = column.inverse_transform(block)
    assert column.inverse_transform(np.asfortranarray(block)).equals(decoded)
    assert decoded.equals(column.inverse_transform(block.astype(np.float64)))
