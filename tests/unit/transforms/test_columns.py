"""ContinuousColumn (point masses included) and CategoricalColumn on tiny handmade columns and small real ones."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from vae_pipeline.errors import DataError, NotFittedError
from vae_pipeline.layout import Span
from vae_pipeline.transforms import COLUMN_TRANSFORMS, CategoricalColumn, ColumnTransform, ContinuousColumn
from vae_pipeline.transforms.base import row_argmax
from vae_pipeline.transforms.continuous import point_masses
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


# ------------------------------------------------------------------ point masses (CTAB-GAN's mixed-type modes)


def zero_inflated(rows: int = 1000, seed: int = 0) -> np.ndarray:
    """80% exact zeros, the rest a positive log-normal spread (an income, a rainfall)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(rows) < 0.8, 0.0, rng.lognormal(3.0, 0.5, rows))


@pytest.mark.parametrize(
    ("sample", "masses"),
    [
        (np.r_[[0.0] * 80, np.linspace(1, 5, 20)], [0.0]),  # 80% at 0, neighbours once each
        (np.r_[np.linspace(0, 99, 950), [100.0] * 50], [100.0]),  # a cap holding 5%
        (np.r_[[-1.0] * 9, np.linspace(0, 1, 500)], []),  # 9 rows: fewer than 10 is not a pile
        (np.random.default_rng(0).binomial(40, 0.5, 2000).astype(float), []),  # a smooth peak, not a mass
        (np.r_[[2.0] * 20, [3.0] * 20, np.linspace(3.1, 9, 60)], [2.0, 3.0]),  # adjacent masses
        (np.full(50, 7.0), []),  # constant: already one mode of width zero
    ],
    ids=["zeros", "cap", "too_few", "binomial", "adjacent", "constant"],
)
def test_point_masses_by_hand(sample: np.ndarray, masses: list[float]) -> None:
    assert point_masses(sample).tolist() == masses


def test_point_mass_encoding_and_decoding_by_hand() -> None:
    column = ContinuousColumn("x", pa.float64())
    state = {
        "kind": "continuous",
        "weights_": [1.0],
        "means_": [50.0],
        "stds_": [10.0],
        "minimum_": 0.0,
        "maximum_": 100.0,
        "has_nulls_": False,
        "decimals_": 1,
        "point_masses_": [0.0, 100.0],
    }
    column.load_state_dict(state)
    assert column.spans(0) == [Span("gaussian", 0, 1, "x"), Span("softmax", 1, 4, "x")]  # 1 mode + 2 masses
    block = column.transform(pa.array([0.0, 50.0, 100.0, 60.0]))
    np.testing.assert_array_equal(block, [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0.25, 1, 0, 0]])
    # A mass slot decodes to exactly its value whatever alpha says; the mixture slot as before.
    decoded = column.inverse_transform(np.array([[0.7, 0.1, 0.8, 0.1], [0.7, 0.2, 0.1, 0.9], [0.25, 0.9, 0.0, 0.0]]))
    assert decoded.to_pylist() == [0.0, 100.0, 60.0]
    written = json.loads(json.dumps(column.state_dict()))
    assert written.pop("arrow_type") and written == {**state, "column": "x"}


def test_zero_inflated_column_decodes_zeros_exactly_and_keeps_their_share() -> None:
    values = zero_inflated()
    array = pa.array(values)
    column = continuous(array, max_modes=5)
    assert column.point_masses_ == [0.0]
    n_modes = len(column.means_)
    assert column.spans(0)[1] == Span("softmax", 1, 2 + n_modes, "x")  # the mass's slot after the mixture's
    block = column.transform(array)
    zeros = values == 0
    np.testing.assert_array_equal(block[zeros, 1 + n_modes], 1.0)
    np.testing.assert_array_equal(block[zeros, 0], 0.0)
    decoded = column.inverse_transform(block).to_numpy()
    np.testing.assert_array_equal(decoded == 0, zeros)  # only the zeros come back as zeros
    np.testing.assert_allclose(decoded, values, rtol=1e-4, atol=1e-4)
    # The mixture now models the spread alone: no mode sits on the zeros.
    assert min(column.means_) > 5


def test_real_point_masses_diabetes_cholesterol_ratio() -> None:
    """Diabetes s4 (total / HDL cholesterol): 84% of 442 rows sit on the whole numbers 2..7, the rest spread."""
    from sklearn.datasets import load_diabetes

    s4 = load_diabetes(scaled=False, as_frame=True).frame["s4"].to_numpy()
    column = continuous(pa.array(s4))
    assert column.point_masses_ == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    decoded = column.inverse_transform(column.transform(pa.array(s4))).to_numpy()
    for mass in column.point_masses_:
        assert (decoded == mass).sum() == (s4 == mass).sum()


def test_point_masses_survive_state_dict_and_column_major_blocks() -> None:
    array = pa.array(zero_inflated(), pa.float32())
    column = continuous(array, max_modes=3)
    state = json.loads(json.dumps(column.state_dict(), allow_nan=False))
    assert state["point_masses_"] == [0.0]
    rebuilt = ContinuousColumn.from_state_dict(state)
    assert rebuilt.spans(2) == column.spans(2)
    block = np.random.default_rng(0).normal(size=(3000, column.output_width)).astype(np.float32)
    decoded = rebuilt.inverse_transform(block)
    assert decoded.equals(column.inverse_transform(np.asfortranarray(block)))
    assert decoded.type == pa.float32()
    on_mass = row_argmax(block[:, 1:]) == len(column.means_)
    assert on_mass.any() and (decoded.to_numpy()[on_mass] == 0).all()


def test_plain_continuous_column_keeps_its_state_and_layout() -> None:
    """No point masses: the state has exactly the keys it had before they existed, and 1 + K slots."""
    values = np.random.default_rng(0).normal(10, 2, 400).round(2)
    column = continuous(pa.array(values), max_modes=4)
    assert column.point_masses_ == []
    assert set(column.state_dict()) == {"kind", "column", "arrow_type", *ContinuousColumn.fitted_attributes}
    assert column.output_width == 1 + len(column.means_)
    # An earlier state (no point_masses_ key) loads and writes back unchanged.
    state = column.state_dict()
    assert ContinuousColumn.from_state_dict(state).state_dict() == state
