"""data.py: opening Parquet (file, directory, glob), CSV and memory:// tables, streaming them, and bad inputs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_pipeline import storage
from vae_pipeline.config import DataConfig
from vae_pipeline.data import open_source
from vae_pipeline.errors import DataError

REPO = Path(__file__).resolve().parents[2]
PENGUINS = str(REPO / "data" / "penguins.parquet")
PENGUINS_CSV = str(REPO / "data" / "penguins.csv")
COLUMNS = [
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
    "year",
]


@pytest.fixture(scope="module")
def penguins() -> pa.Table:
    return pq.read_table(PENGUINS)


@pytest.fixture()
def memory_root() -> Iterator[str]:
    root = f"memory://test-data-{uuid.uuid4().hex}"
    yield root
    storage.remove(root)


def _read_all(config: DataConfig, batch_rows: int = 65_536) -> pa.Table:
    source = open_source(config)
    return pa.Table.from_batches(list(source.batches(batch_rows)), schema=source.schema)


def _split_into_files(table: pa.Table, directory: Path, sizes: list[int]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, size in enumerate(sizes):
        pq.write_table(table.slice(start, size), directory / f"part-{i}.parquet")
        start += size
    assert start == table.num_rows


# ------------------------------------------------------------------ good inputs


def test_shipped_parquet(penguins: pa.Table) -> None:
    source = open_source(DataConfig(input_url=PENGUINS))
    assert source.format == "parquet"
    assert source.columns == COLUMNS
    assert source.count_rows() == 344
    assert len(source.files) == 1
    assert _read_all(DataConfig(input_url=PENGUINS)).equals(penguins)


@pytest.mark.parametrize(("batch_rows", "sizes"), [(100, [100, 100, 100, 44]), (344, [344]), (1000, [344])])
def test_batches_have_the_requested_size(batch_rows: int, sizes: list[int], penguins: pa.Table) -> None:
    batches = list(open_source(DataConfig(input_url=PENGUINS)).batches(batch_rows))
    assert [b.num_rows for b in batches] == sizes
    assert pa.Table.from_batches(batches).equals(penguins)


def test_directory_of_parquet_files(tmp_path: Path, penguins: pa.Table) -> None:
    _split_into_files(penguins, tmp_path / "dir", [100, 200, 44])
    (tmp_path / "dir" / "_SUCCESS").write_bytes(b"")  # hidden and underscore files are skipped
    (tmp_path / "dir" / ".part-9.parquet.crc").write_bytes(b"junk")

    config = DataConfig(input_url=str(tmp_path / "dir"))
    source = open_source(config)
    assert len(source.files) == 3
    assert source.count_rows() == 344
    assert _read_all(config, batch_rows=64).equals(penguins)


def test_glob_of_parquet_files(tmp_path: Path, penguins: pa.Table) -> None:
    _split_into_files(penguins, tmp_path / "dir", [10, 300, 34])
    pq.write_table(penguins.slice(0, 5), tmp_path / "dir" / "other.parquet")  # not matched by the glob

    config = DataConfig(input_url=str(tmp_path / "dir" / "part-*.parquet"))
    source = open_source(config)
    assert [Path(f).name for f in source.files] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert _read_all(config).equals(penguins)


def test_csv_reads_na_as_null(penguins: pa.Table) -> None:
    config = DataConfig(input_url=PENGUINS_CSV)
    source = open_source(config)
    assert source.format == "csv"
    assert source.columns == COLUMNS
    table = _read_all(config)
    assert table.num_rows == 344
    # The parquet copy has 11 null 'sex' values and 2 null bill lengths; "NA" in the CSV must give the same.
    for name in COLUMNS:
        assert table.column(name).null_count == penguins.column(name).null_count, name
    assert table.column("sex").null_count == 11
    assert "NA" not in table.column("sex").to_pylist()
    assert pa.types.is_string(table.schema.field("sex").type)
    assert pa.types.is_floating(table.schema.field("bill_length_mm").type)
    assert table.column("species").to_pylist() == penguins.column("species").to_pylist()


def test_csv_nulls_in_every_listed_spelling(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,x\nNA,N/A\n,null\n4,None\n")
    table = _read_all(DataConfig(input_url=str(tmp_path / "t.csv")))
    assert table.column("a").to_pylist() == [1, None, None, 4]
    assert table.column("b").to_pylist() == ["x", None, None, None]


def test_memory_url(memory_root: str, penguins: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(penguins, sink)
    url = storage.join_url(memory_root, "penguins.parquet")
    storage.atomic_write(url, sink.getvalue().to_pybytes())

    source = open_source(DataConfig(input_url=url))
    assert source.count_rows() == 344
    assert _read_all(DataConfig(input_url=url), batch_rows=50).equals(penguins)


def test_drop_columns_removes_them_from_schema_and_batches() -> None:
    config = DataConfig(input_url=PENGUINS, drop_columns=["year", "island"])
    source = open_source(config)
    assert source.columns == ["species", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]
    assert all(b.schema.names == source.columns for b in source.batches(100))


def test_label_column_present_is_accepted() -> None:
    assert open_source(DataConfig(input_url=PENGUINS, label_column="species")).count_rows() == 344


# ------------------------------------------------------------------ bad inputs


def test_missing_path(tmp_path: Path) -> None:
    url = str(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match=r"nope\.parquet does not exist"):
        open_source(DataConfig(input_url=url))


def test_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="matches no files"):
        open_source(DataConfig(input_url=str(tmp_path / "*.parquet")))


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty does not exist or matches no files"):
        open_source(DataConfig(input_url=str(tmp_path / "empty")))


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError, match=r"x\.parquet"):
        open_source(DataConfig(input_url=str(path)))


def test_empty_table(tmp_path: Path, penguins: pa.Table) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(penguins.slice(0, 0), path)
    with pytest.raises(DataError, match=r"empty\.parquet holds no rows"):
        open_source(DataConfig(input_url=str(path)))


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.nulls(3, pa.null()), "column 'bad' is all null"),
        (pa.array([[1], [2, 3], []], type=pa.list_(pa.int64())), "column 'bad' has unsupported type list"),
        (pa.array([{"x": 1}, {"x": 2}, {"x": 3}]), "column 'bad' has unsupported type struct"),
        (pa.array([b"a", b"b", b"c"], type=pa.binary()), "column 'bad' row 0 cannot be decoded as an image"),
    ],
)
def test_unsupported_column(tmp_path: Path, column: pa.Array, message: str) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"ok": [1.0, 2.0, 3.0], "bad": column}), path)
    with pytest.raises(DataError, match=message):
        open_source(DataConfig(input_url=str(path)))
    # Dropping the column makes the same file usable.
    source = open_source(DataConfig(input_url=str(path), drop_columns=["bad"]))
    assert source.columns == ["ok"]


def test_label_column_missing() -> None:
    with pytest.raises(DataError, match="label column 'kind' is not in the data"):
        open_source(DataConfig(input_url=PENGUINS, label_column="kind"))


def test_label_column_also_dropped() -> None:
    with pytest.raises(DataError, match=r"label column 'species' is also in data\.drop_columns"):
        open_source(DataConfig(input_url=PENGUINS, label_column="species", drop_columns=["species"]))


def test_drop_column_missing() -> None:
    with pytest.raises(DataError, match="column 'weight' named in the config is not in the data"):
        open_source(DataConfig(input_url=PENGUINS, drop_columns=["weight"]))


def test_column_kind_for_missing_column() -> None:
    with pytest.raises(DataError, match="column 'weight'"):
        open_source(DataConfig(input_url=PENGUINS, column_kinds={"weight": "continuous"}))


def test_every_column_dropped() -> None:
    with pytest.raises(DataError, match="every column is dropped"):
        open_source(DataConfig(input_url=PENGUINS, drop_columns=COLUMNS))


def test_corrupt_parquet_not_first_in_directory(tmp_path: Path, penguins: pa.Table) -> None:
    _split_into_files(penguins, tmp_path / "dir", [344])
    (tmp_path / "dir" / "part-9.parquet").write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError, match=r"part-9\.parquet"):
        open_source(DataConfig(input_url=str(tmp_path / "dir")))


def test_directory_skips_hidden_and_underscore_subdirectories(tmp_path: Path, penguins: pa.Table) -> None:
    _split_into_files(penguins, tmp_path / "dir", [344])
    _split_into_files(penguins, tmp_path / "dir" / "_temporary" / "0", [344])
    _split_into_files(penguins, tmp_path / "dir" / ".ipynb_checkpoints", [344])
    source = open_source(DataConfig(input_url=str(tmp_path / "dir")))
    assert [Path(f).name for f in source.files] == ["part-0.parquet"]
    assert source.count_rows() == 344
