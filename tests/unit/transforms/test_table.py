"""TableTransform on the Palmer penguins, scikit-learn's iris and tiny handmade tables."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.datasets import load_iris

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import ConfigError, DataError
from vae_pipeline.transforms import TableTransform
from vae_pipeline.transforms.arrow_types import numeric_values


def fit(table: pa.Table, config: DataConfig, rows: int = 64, **kwargs) -> TableTransform:
    return TableTransform.fit(table.to_batches(max_chunksize=rows), table.schema, config, **kwargs)


def assert_close(original: pa.Table, restored: pa.Table) -> None:
    """Same schema, nulls in the same places, categoricals exact, continuous within 1e-4 of the range."""
    assert restored.schema == original.schema
    for name in original.schema.names:
        before, after = original.column(name), restored.column(name)
        assert pc.equal(before.is_null(), after.is_null()).to_pylist() == [True] * len(before), name
        if pa.types.is_floating(before.type):
            a = before.to_numpy(zero_copy_only=False)
            b = after.to_numpy(zero_copy_only=False)
            span = np.nanmax(a) - np.nanmin(a)
            np.testing.assert_allclose(b, a, atol=1e-4 * span, equal_nan=True, err_msg=name)
        else:
            assert after.to_pylist() == before.to_pylist(), name


def test_penguins_kinds_and_round_trip(penguins: pa.Table, config: DataConfig) -> None:
    transform = fit(penguins, config)
    assert transform.column_kinds() == {
        "species": "categorical",
        "island": "categorical",
        "bill_length_mm": "continuous",
        "bill_depth_mm": "discrete",  # one decimal, on a grid of about 100 points in 344 rows
        "flipper_length_mm": "discrete",
        "body_mass_g": "discrete",  # multiples of 25 g
        "sex": "categorical",
        "year": "categorical",  # 3 distinct integers
    }
    matrix = transform.transform(penguins)
    assert matrix.dtype == np.float32 and matrix.shape == (344, transform.output_dim)
    assert_close(penguins, transform.inverse_transform(matrix))


def test_iris_round_trip() -> None:
    iris = pa.Table.from_pandas(load_iris(as_frame=True).frame, preserve_index=False)
    transform = fit(iris, DataConfig(fit_sample_rows=150, max_modes=4, label_column="target"), rows=16)
    assert transform.label_classes == [0, 1, 2]
    assert_close(iris, transform.inverse_transform(transform.transform(iris)))


def test_mixed_types_round_trip(mixed: pa.Table, config: DataConfig) -> None:
    transform = fit(mixed, config, rows=7)
    assert transform.column_kinds() == {
        "f64": "continuous",
        "f32": "continuous",
        "few_ints": "categorical",
        "many_ints": "continuous",
        "text": "categorical",
        "big_text": "categorical",
        "flag": "categorical",
        "coded": "categorical",
        "day": "datetime",
        "stamp": "datetime",
        "price": "continuous",
    }
    restored = transform.inverse_transform(transform.transform(mixed))
    assert restored.schema == mixed.schema
    for name in ["few_ints", "text", "big_text", "flag", "coded"]:
        assert restored.column(name).to_pylist() == mixed.column(name).to_pylist(), name
    for name in ["f64", "f32", "many_ints", "day", "stamp", "price"]:
        before, _ = numeric_values(mixed.column(name))
        after, _ = numeric_values(restored.column(name))
        # float32 alpha carries ~1e-7 of a mode's width; integers, dates and decimals round to their unit
        unit = {"many_ints": 1, "day": 1, "price": 0.01}.get(name, 0)
        assert np.abs(after - before).max() <= 1e-5 * np.ptp(before) + unit, name


def test_column_kinds_override(penguins: pa.Table, config: DataConfig) -> None:
    overridden = config.model_copy(update={"column_kinds": {"year": "continuous"}})
    transform = fit(penguins, overridden)
    assert transform.column_kinds()["year"] == "continuous"
    restored = transform.inverse_transform(transform.transform(penguins))
    assert restored.column("year").type == pa.int64()
    assert set(restored.column("year").to_pylist()) <= {2007, 2008, 2009}


def test_spans_cover_the_matrix_and_masks_point_at_null_slots(penguins: pa.Table, config: DataConfig) -> None:
    transform = fit(penguins, config)
    ends = [0] + [span.end for span in transform.spans]
    assert [span.start for span in transform.spans] == ends[:-1]
    assert ends[-1] == transform.output_dim
    kinds = {span.start: span for span in transform.spans}
    masked = [span for span in transform.spans if span.mask is not None]
    assert {span.column for span in masked} == {"bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"}
    for span in masked:
        null_slot = kinds[span.mask]
        assert (null_slot.kind, null_slot.column, null_slot.width) == ("bernoulli", span.column, 1)
        assert span.mask > span.start  # the null slot comes after the column's other slots
    matrix = transform.transform(penguins)
    null_rows = np.asarray(penguins.column("body_mass_g").is_null())
    slot = next(s for s in transform.spans if s.kind == "bernoulli" and s.column == "body_mass_g").start
    np.testing.assert_array_equal(matrix[:, slot], null_rows.astype(np.float32))


@pytest.mark.parametrize("rows", [1, 5, 50])
def test_streaming_fit_matches_one_batch(penguins: pa.Table, config: DataConfig, rows: int) -> None:
    whole = fit(penguins, config, rows=len(penguins)).state_dict()
    streamed = fit(penguins, config, rows=rows).state_dict()
    for one, other in zip(whole["columns"], streamed["columns"], strict=True):
        if one["kind"] == "categorical":
            assert one == other
        else:
            np.testing.assert_allclose(other["means_"], one["means_"], rtol=1e-9)
            np.testing.assert_allclose(other["stds_"], one["stds_"], rtol=1e-9)


def test_reservoir_smaller_than_data_still_round_trips(penguins: pa.Table) -> None:
    transform = fit(penguins, DataConfig(fit_sample_rows=100, max_modes=3), rows=10)
    assert_close(penguins, transform.inverse_transform(transform.transform(penguins)))


def test_state_dict_json_round_trip(penguins: pa.Table, config: DataConfig) -> None:
    transform = fit(penguins, config.model_copy(update={"label_column": "species"}))
    text = json.dumps(transform.state_dict(), allow_nan=False)
    rebuilt = TableTransform.from_state_dict(json.loads(text))
    np.testing.assert_array_equal(rebuilt.transform(penguins), transform.transform(penguins))
    assert rebuilt.spans == transform.spans and rebuilt.schema == transform.schema
    assert rebuilt.label_classes == transform.label_classes
    noisy = np.random.default_rng(0).normal(size=(50, transform.output_dim)).astype(np.float32)
    assert rebuilt.inverse_transform(noisy).equals(transform.inverse_transform(noisy))


def test_label_codes_and_condition(penguins: pa.Table, config: DataConfig) -> None:
    transform = fit(penguins, config.model_copy(update={"label_column": "species"}))
    assert transform.label_classes == ["Adelie", "Chinstrap", "Gentoo"]
    codes = transform.label_codes(penguins)
    assert codes.dtype == np.int64
    assert np.bincount(codes).tolist() == [152, 68, 124]
    np.testing.assert_array_equal(transform.condition(np.array([2, 0])), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(DataError, match="codes"):
        transform.condition(np.array([3]))


def test_conditional_leaves_label_out_of_matrix(penguins: pa.Table, config: DataConfig) -> None:
    labelled = config.model_copy(update={"label_column": "species"})
    plain = fit(penguins, labelled)
    conditional = fit(penguins, labelled, conditional=True)
    assert conditional.conditional and "species" not in {span.column for span in conditional.spans}
    assert conditional.output_dim == plain.output_dim - 3
    matrix = conditional.transform(penguins)
    restored = conditional.inverse_transform(matrix, labels=conditional.label_codes(penguins))
    assert_close(penguins, restored)
    with pytest.raises(ValueError, match="labels"):
        conditional.inverse_transform(matrix)
    with pytest.raises(ValueError, match="labels"):
        plain.inverse_transform(plain.transform(penguins), labels=np.zeros(344, dtype=np.int64))


def test_conditional_needs_a_label(penguins: pa.Table, config: DataConfig) -> None:
    with pytest.raises(ConfigError, match="label_column"):
        fit(penguins, config, conditional=True)


def test_inverse_transform_is_fast(penguins: pa.Table, config: DataConfig) -> None:
    import time

    transform = fit(penguins, config)
    matrix = np.random.default_rng(1).normal(size=(4096, transform.output_dim)).astype(np.float32)
    start = time.perf_counter()
    table = transform.inverse_transform(matrix)
    assert table.num_rows == 4096
    assert time.perf_counter() - start < 0.5


def test_label_methods_need_a_label(penguins: pa.Table, config: DataConfig) -> None:
    transform = fit(penguins.select(["species", "year"]), config)
    assert transform.label_column is None and transform.label_classes == []
    with pytest.raises(ConfigError, match="label_column"):
        transform.label_codes(penguins)


def test_version_one_state_loads_and_decodes_the_same_rows(penguins: pa.Table, config: DataConfig) -> None:
    transform = fit(penguins.select(["species", "island", "bill_length_mm", "year"]), config)
    state = transform.state_dict()
    old = {**state, "version": 1, "columns": [dict(item) for item in state["columns"]]}
    del old["roles"]
    for item in old["columns"]:
        for key in ("rare_values_", "rare_counts_"):
            item.pop(key, None)
    rebuilt = TableTransform.from_state_dict(json.loads(json.dumps(old)))
    assert rebuilt.column_kinds() == transform.column_kinds()
    noisy = np.random.default_rng(3).normal(size=(40, transform.output_dim)).astype(np.float32)
    assert rebuilt.inverse_transform(noisy).equals(transform.inverse_transform(noisy))
    with pytest.raises(DataError, match="version 0 is not 2; refit it"):
        TableTransform.from_state_dict({**state, "version": 0})


def test_a_decimal_column_with_few_values_is_categorical_and_round_trips_exactly_through_json() -> None:
    values = [Decimal(f"{i % 5}.25") for i in range(200)]
    table = pa.table({"d": pa.array(values, pa.decimal128(6, 2)), "x": [float(i) for i in range(200)]})
    transform = TableTransform.fit(table.to_batches(), table.schema, DataConfig())
    assert transform.column_kinds()["d"] == "categorical"
    loaded = TableTransform.from_state_dict(json.loads(json.dumps(transform.state_dict())))
    assert loaded.inverse_transform(loaded.transform(table)).column("d").equals(table.column("d"))
