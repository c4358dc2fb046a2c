"""Column roles: ids, dates and numbers as text, long-tail categories, free text, constants, drop, and the
bad inputs (mixed date formats, an id override on repeats, nothing to model). Real tables from vega_datasets
and plotly (bundled with the packages, read as raw CSV so dates stay text) and tiny handmade ones."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.transforms import TableTransform

CONFIG = DataConfig(fit_sample_rows=500, max_modes=3)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"  # vega_datasets' own CSV files (tests/fixtures/README.md)


def fit(table: pa.Table, config: DataConfig = CONFIG, rows: int = 97) -> TableTransform:
    return TableTransform.fit(table.to_batches(max_chunksize=rows), table.schema, config)


def noise(transform: TableTransform, rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, transform.output_dim)).astype(np.float32)


def vega(name: str, strings: list[str] | None = None) -> pa.Table:
    """A vega_datasets table (shipped in tests/fixtures) as Arrow reads it, with `strings` kept as text."""
    types = dict.fromkeys(strings or [], pa.string())
    return pa_csv.read_csv(FIXTURES / name, convert_options=pa_csv.ConvertOptions(column_types=types))


# --- ids ---------------------------------------------------------------------------------------------------


def test_string_ids_are_fresh_unique_across_offsets_and_in_the_training_pattern() -> None:
    airports = vega("airports.csv").select(["iata", "state", "latitude"])  # 2,000 unique codes such as "00M"
    transform = fit(airports, rows=500)
    assert transform.column_roles()["iata"] == ("id", "unique per row (2,000 of 2,000)")
    assert "iata" not in {span.column for span in transform.spans}
    first = transform.inverse_transform(noise(transform, 2_000), row_offset=0).column("iata").to_pylist()
    second = transform.inverse_transform(noise(transform, 2_000, 1), row_offset=2_000).column("iata").to_pylist()
    generated = first + second
    assert len(set(generated)) == 4_000  # unique across the two "shards"
    assert not set(generated) & set(airports.column("iata").to_pylist())  # never a training id
    assert all(re.fullmatch(r"[0-9A-Z]{3}", value) for value in generated)
    again = transform.inverse_transform(noise(transform, 2_000, 5), row_offset=2_000).column("iata").to_pylist()
    assert again == second  # the ids depend on the rows' place in the dataset only


def test_numbered_ids_continue_above_the_training_maximum() -> None:
    ids = [f"INV-{i:05d}" for i in range(1, 301)]
    table = pa.table({"invoice": pa.array(ids, pa.large_string()), "amount": np.linspace(1.0, 9.0, 300)})
    transform = fit(table)
    assert transform.column_kinds()["invoice"] == "id"
    restored = transform.inverse_transform(noise(transform, 3), row_offset=10).column("invoice")
    assert restored.type == pa.large_string()
    assert restored.to_pylist() == ["INV-00311", "INV-00312", "INV-00313"]


def test_integer_ids_get_a_fresh_range_and_keep_their_type() -> None:
    table = pa.table({"row_id": pa.array(np.arange(1, 201), pa.int32()), "x": np.sin(np.arange(200.0))})
    transform = fit(table)
    assert transform.column_roles()["row_id"] == ("id", "unique per row (200 of 200)")
    restored = transform.inverse_transform(noise(transform, 4), row_offset=1_000).column("row_id")
    assert restored.type == pa.int32() and restored.to_pylist() == [1_201, 1_202, 1_203, 1_204]


def test_unique_integers_that_are_measurements_are_not_ids() -> None:
    values = np.random.default_rng(0).permutation(100_000)[:200] + 5_000  # unique but not counting rows
    transform = fit(pa.table({"population": pa.array(values)}))
    assert transform.column_kinds()["population"] != "id"


def test_id_override_on_repeated_values_is_one_line() -> None:
    table = pa.table({"code": pa.array(["a", "b", "c", "b", "d"] * 2), "x": np.arange(10.0)})
    with pytest.raises(DataError, match=r"^column 'code' is set to id .* repeats values \(e.g. 'b'\)[^\n]*$"):
        fit(table, CONFIG.model_copy(update={"column_kinds": {"code": "id"}}))


# --- dates as text -----------------------------------------------------------------------------------------


def test_seattle_weather_dates_as_text_round_trip_exactly() -> None:
    weather = vega("seattle_weather.csv")  # "2012/01/01": Arrow keeps it a string
    assert weather.schema.field("date").type == pa.string()
    transform = fit(weather, rows=300)
    role, reason = transform.column_roles()["date"]
    assert role == "datetime" and reason.startswith("dates as text, %Y/%m/%d")
    assert transform.scoring_kinds()["date"] == "continuous"
    restored = transform.inverse_transform(transform.transform(weather))
    assert restored.column("date").to_pylist() == weather.column("date").to_pylist()
    synthetic = transform.inverse_transform(noise(transform, 500)).column("date").to_pylist()
    assert all(re.fullmatch(r"201[2-5]/[01]\d/[0-3]\d", value) for value in synthetic)
    days = transform.scoring_view(weather).column("date").to_pylist()
    assert days[:2] == [15_340, 15_341]  # 2012-01-01 as days since 1970


@pytest.mark.parametrize(
    ("write", "pattern"),
    [
        (
            lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
            r"20(19|20)-\d\d-\d\dT[\d:]{8}\.\d{3}Z",
        ),
        (lambda t: t.strftime("%d.%m.%Y"), r"[0-3]\d\.[01]\d\.20(19|20)"),
        (lambda t: t.strftime("%H:%M:%S"), r"[012]\d:[0-5]\d:[0-5]\d"),
        (lambda t: t.strftime("%m/%d/%Y %H:%M"), r"[01]\d/[0-3]\d/20(19|20) [012]\d:[0-5]\d"),
    ],
    ids=["iso-millis-utc", "european", "time", "us-datetime"],
)
def test_date_formats_round_trip(write: Callable[[dt.datetime], str], pattern: str) -> None:
    offsets = np.random.default_rng(2).integers(0, 700 * 86_400_000, 150)  # milliseconds over two years
    column = pa.array([write(dt.datetime(2019, 1, 1) + dt.timedelta(milliseconds=int(ms))) for ms in offsets] + [None])
    table = pa.table({"when": column, "x": np.arange(151.0)})
    transform = fit(table)
    assert transform.column_kinds()["when"] == "datetime"
    restored = transform.inverse_transform(transform.transform(table))
    assert restored.column("when").is_null().to_pylist() == column.is_null().to_pylist()
    assert all(re.fullmatch(pattern, value) for value in restored.column("when").drop_null().to_pylist())
    # float32 offsets within a mixture mode: exact for days and seconds of a day, within 1e-6 of the range for ticks
    before = np.array(transform.scoring_view(table).column("when").drop_null(), dtype=float)
    after = np.array(transform.scoring_view(restored).column("when").drop_null(), dtype=float)
    assert np.abs(after - before).max() <= 1e-6 * np.ptp(before)
    synthetic = transform.inverse_transform(noise(transform, 200)).column("when").drop_null().to_pylist()
    assert synthetic and all(re.fullmatch(pattern, value) for value in synthetic)


def test_mixed_date_formats_are_one_line_naming_two_values() -> None:
    values = ["2021-03-04", "2021-05-06", "07/08/2021"] * 10
    table = pa.table({"when": values, "x": np.arange(30.0)})
    message = r"^column 'when' mixes date formats: '2021-03-04' \(%Y-%m-%d\) and '07/08/2021' \(%m/%d/%Y\);[^\n]*$"
    with pytest.raises(DataError, match=message):
        fit(table)
    kept = fit(table, CONFIG.model_copy(update={"column_kinds": {"when": "categorical"}}))  # the way out it names
    assert kept.inverse_transform(kept.transform(table)).column("when").to_pylist() == values


# --- numbers and booleans as text ----------------------------------------------------------------------------


def test_numbers_as_text_are_modelled_as_numbers_and_keep_their_format() -> None:
    rng = np.random.default_rng(3)
    n = 600
    table = pa.table(
        {
            "padded": [f"{v:03d}" for v in rng.integers(0, 300, n)],  # codes with leading zeros
            "price": [f"{v:.2f}" for v in rng.uniform(1, 500, n).round(1)],  # "12.50": always two decimals
            "big": [f"{v:,}" for v in rng.integers(500, 5_000_000, n)],  # "1,234,567"
            "answer": rng.choice(["true", "false", "no"], n).tolist(),
        }
    )
    transform = fit(table)
    roles = transform.column_roles()
    assert roles["padded"][0] == "discrete" and roles["padded"][1].startswith(
        "numbers as text, integers, zero-padded to 3"
    )
    assert roles["price"][0] in ("continuous", "discrete") and "2 decimals" in roles["price"][1]
    assert roles["big"][0] == "continuous" and "thousands separator" in roles["big"][1]
    assert roles["answer"] == ("categorical", "3 values")
    assert (
        transform.inverse_transform(transform.transform(table)).column("padded").to_pylist()
        == table.column("padded").to_pylist()
    )
    synthetic = transform.inverse_transform(noise(transform, 300))
    assert synthetic.schema == table.schema
    assert all(re.fullmatch(r"\d{3}", v) for v in synthetic.column("padded").to_pylist())
    assert all(re.fullmatch(r"\d+\.\d0", v) for v in synthetic.column("price").to_pylist())
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*", v) for v in synthetic.column("big").to_pylist())
    assert set(synthetic.column("answer").to_pylist()) <= {"true", "false", "no"}


# --- long tails, text, constants, drop -------------------------------------------------------------------------


def test_long_tail_shares_a_rare_slot_drawn_from_training_frequencies() -> None:
    counts = {"common": 400, "usual": 300} | {f"r{i:02d}": 2 * (i + 1) for i in range(40)}  # r39 80x, r00 2x
    values = [value for value, count in counts.items() for _ in range(count)]
    table = pa.table({"code": pa.array(values).dictionary_encode(), "x": np.arange(len(values), dtype=float)})
    transform = fit(table, CONFIG.model_copy(update={"max_categories": 3}))
    assert transform.column_roles()["code"] == ("categorical", "42 values: 2 frequent + rare class")
    assert transform.transform(table).shape[1] == transform.output_dim
    start, end = transform._slices["code"]
    assert end - start == 3  # common, usual, rare
    matrix = np.zeros((20_000, transform.output_dim), dtype=np.float32)
    matrix[:, end - 1] = 1.0  # every row in the rare slot
    drawn = transform.inverse_transform(matrix, rng=np.random.default_rng(7)).column("code")
    assert drawn.type == table.schema.field("code").type
    seen = {value: 0 for value in counts if value.startswith("r")}
    for value in drawn.to_pylist():
        seen[value] += 1
    tail = np.array([counts[value] for value in seen], dtype=float)
    np.testing.assert_allclose(np.array(list(seen.values())) / 20_000, tail / tail.sum(), atol=0.006)
    same = transform.inverse_transform(matrix, rng=np.random.default_rng(7)).column("code")
    assert same.equals(drawn)


def test_a_thousand_and_one_values_is_no_error() -> None:
    values = [f"city {i}" for i in range(1_001)] * 3
    transform = fit(pa.table({"city": values, "x": np.arange(3_003.0)}), rows=1_000)
    assert transform.column_roles()["city"] == ("categorical", "1,001 values: 999 frequent + rare class")
    assert set(transform.inverse_transform(noise(transform, 50)).column("city").to_pylist()) <= set(values)


def test_free_text_keeps_repeated_values_and_nulls_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    remarks = [f"customer {i} called about the delayed parcel" for i in range(190)] + ["no remarks at all"] * 10
    table = pa.table({"remark": pa.array(remarks, pa.large_string()), "x": np.arange(200.0)})
    with caplog.at_level(logging.WARNING):
        transform = fit(table)
    assert transform.column_roles()["remark"] == ("text", "free text, 95% of values seen once")
    assert transform.scoring_kinds() == {"x": "continuous"}
    assert "column 'remark' is free text: 190 of 200 values (95.0%)" in caplog.text
    restored = transform.inverse_transform(transform.transform(table)).column("remark")
    assert restored.type == pa.large_string()
    assert restored.to_pylist() == [None] * 190 + ["no remarks at all"] * 10
    assert set(transform.inverse_transform(noise(transform, 100)).column("remark").to_pylist()) <= {
        None,
        "no remarks at all",
    }


def test_drop_leaves_the_column_out_of_everything() -> None:
    table = pa.table({"a": np.arange(50.0), "remark": [f"note {i} on this row here" for i in range(50)]})
    transform = fit(table, CONFIG.model_copy(update={"column_kinds": {"remark": "drop"}}))
    assert transform.schema.names == ["a"]
    assert transform.inverse_transform(noise(transform, 5)).schema.names == ["a"]
    assert transform.column_roles()["remark"] == ("drop", "data.column_kinds: drop")
    assert DataConfig(column_kinds={"remark": "drop"}, drop_columns=["b"]).dropped_columns == ["b", "remark"]


def test_constant_columns_pass_through_without_a_place_in_the_matrix() -> None:
    table = pa.table(
        {
            "source": pa.array(["survey"] * 30).dictionary_encode(),
            "version": pa.array([3] * 30, pa.int16()),
            "x": np.arange(30.0),
        }
    )
    transform = fit(table)
    assert transform.column_roles()["source"] == ("constant", "one value, 'survey'")
    assert transform.column_kinds()["version"] == "constant"
    assert {span.column for span in transform.spans} == {"x"}
    restored = transform.inverse_transform(noise(transform, 4))
    assert restored.schema == table.schema
    assert restored.column("source").to_pylist() == ["survey"] * 4 and restored.column("version").to_pylist() == [3] * 4


def test_nothing_to_model_is_one_line() -> None:
    table = pa.table(
        {"id": [f"u{i}" for i in range(40)], "note": [f"a long remark number {i} here" for i in range(40)]}
    )
    with pytest.raises(DataError, match=r"^nothing to model: every column is an id, free text or a constant[^\n]*$"):
        fit(table)


# --- state, layout, real tables ------------------------------------------------------------------------------


def test_state_with_every_role_round_trips_through_json(penguins: pa.Table) -> None:
    rng = np.random.default_rng(1)
    table = penguins.append_column("row_id", pa.array(np.arange(344))).append_column(
        "when", pa.array([f"2020-01-{d:02d}" for d in rng.integers(1, 29, 344)])
    )
    table = table.append_column("source", pa.array(["x"] * 344))
    transform = fit(table)
    state = json.loads(json.dumps(transform.state_dict(), allow_nan=False))
    rebuilt = TableTransform.from_state_dict(state)
    assert rebuilt.column_roles() == transform.column_roles()
    assert rebuilt.spans == transform.spans
    matrix = noise(transform, 64)
    assert rebuilt.inverse_transform(matrix, row_offset=7).equals(transform.inverse_transform(matrix, row_offset=7))


def test_gapminder_roles() -> None:
    plotly_data = pytest.importorskip("plotly.data")
    gapminder = pa.Table.from_pandas(plotly_data.gapminder(), preserve_index=False)
    transform = fit(gapminder, rows=400)
    kinds = transform.column_kinds()
    assert {kinds[name] for name in ("country", "continent", "iso_alpha", "year")} == {"categorical"}
    assert kinds["lifeExp"] == "continuous"
    restored = transform.inverse_transform(noise(transform, 100))
    assert restored.schema == gapminder.schema
    assert set(restored.column("iso_alpha").to_pylist()) <= set(gapminder.column("iso_alpha").to_pylist())


def test_categorical_override_refuses_a_tail_that_would_copy_rows() -> None:
    table = pa.table({"note": [f"n{i}" for i in range(1_200)], "x": np.arange(1_200.0)})
    message = r"^column 'note' is set to categorical, but 100% of its rows hold a value no other row has[^\n]*text"
    with pytest.raises(DataError, match=message):
        fit(table, CONFIG.model_copy(update={"column_kinds": {"note": "categorical"}}), rows=500)


@pytest.mark.parametrize(
    ("values", "kind", "role", "message"),
    [
        ([f"{v}" for v in range(10)] * 6, "continuous", "continuous", None),
        ([f"2021-01-{d:02d}" for d in range(1, 11)] * 6, "datetime", "datetime", None),
        (["a", "b", "c"] * 20, "datetime", None, r"column 'c' has type string, which cannot be datetime .*e.g. 'a'"),
        ([f"x{v}" for v in range(60)], "id", "id", None),
    ],
)
def test_overrides_on_strings(values: list[str], kind: str, role: str | None, message: str | None) -> None:
    table = pa.table({"c": values, "x": np.arange(60.0)})
    config = CONFIG.model_copy(update={"column_kinds": {"c": kind}})
    if message is not None:
        with pytest.raises(DataError, match=message):
            fit(table, config)
        return
    transform = fit(table, config)
    assert transform.column_roles()["c"] == (role, f"data.column_kinds: {kind}")
    assert transform.inverse_transform(noise(transform, 10)).schema == table.schema
