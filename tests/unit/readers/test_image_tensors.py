"""Image columns through the reader: tensors.py on tables and Parquet, and SyntheticDataset on a committed dataset.

The images are the first rows of scikit-learn's 8x8 digits (bundled with the package, nothing downloaded), stored
as uint8 (pixel values 0..16 as they are) and as float32 (divided by 16), each row with an id and a string label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from vae_pipeline.errors import DataError
from vae_pipeline.generation.manifest import Manifest, schema_json, write_manifest
from vae_pipeline.generation.plan import shard_name
from vae_pipeline.generation.writer import ShardRecord, write_shard
from vae_pipeline.image_columns import image_array
from vae_pipeline.readers import SyntheticDataset
from vae_pipeline.readers.tensors import table_to_batch, table_to_rows

ROWS = 10
SIZES = (4, 3, 3)  # shards of the committed dataset


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(ROWS, 1, 8, 8) uint8 images and their int digits."""
    data = load_digits()
    return data.images[:ROWS, np.newaxis].astype(np.uint8), data.target[:ROWS].astype(np.int64)


def digits_table(images: np.ndarray, targets: np.ndarray) -> pa.Table:
    """id, image, label (string) and digit; id and digit not nullable, so they batch as int64 tensors."""
    columns = [
        pa.array(np.arange(len(images)), pa.int64()),
        image_array(images),
        pa.array([f"digit {t}" for t in targets]),
        pa.array(targets, pa.int64()),
    ]
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("image", columns[1].type),
        pa.field("label", pa.string()),
        pa.field("digit", pa.int64(), nullable=False),
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


@pytest.fixture(scope="module", params=["uint8", "float32"])
def images(request: pytest.FixtureRequest, digits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    uint8 = digits[0]
    return uint8 if request.param == "uint8" else uint8.astype(np.float32) / 16


@pytest.fixture(scope="module")
def table(images: np.ndarray, digits: tuple[np.ndarray, np.ndarray]) -> pa.Table:
    return digits_table(images, digits[1])


def test_batch_is_b_c_h_w_in_the_stored_dtype(table: pa.Table, images: np.ndarray) -> None:
    batch = table_to_batch(table)
    image = batch["image"]
    assert isinstance(image, torch.Tensor)
    assert image.shape == (ROWS, 1, 8, 8)
    assert image.dtype == (torch.uint8 if images.dtype == np.uint8 else torch.float32)
    assert np.array_equal(image.numpy(), images)
    assert list(batch) == ["id", "image", "label", "digit"]
    assert batch["label"][:3] == ["digit 0", "digit 1", "digit 2"]  # strings stay lists
    assert isinstance(batch["digit"], torch.Tensor) and batch["digit"].dtype == torch.int64


def test_parquet_round_trip_chunks_and_slices(table: pa.Table, images: np.ndarray, tmp_path: Path) -> None:
    pq.write_table(table, tmp_path / "digits.parquet", row_group_size=3)
    read = pq.read_table(tmp_path / "digits.parquet")
    assert np.array_equal(table_to_batch(read)["image"].numpy(), images)  # type: ignore[union-attr]
    two_chunks = pa.concat_tables([table.slice(0, 3), table.slice(3)])
    assert np.array_equal(table_to_batch(two_chunks)["image"].numpy(), images)  # type: ignore[union-attr]
    offset = table.slice(7, 2)  # a slice's buffers start at an offset (rebatch hands out such slices)
    assert np.array_equal(table_to_batch(offset)["image"].numpy(), images[7:9])  # type: ignore[union-attr]


def test_rows_carry_c_h_w_tensors(table: pa.Table, images: np.ndarray) -> None:
    rows = list(table_to_rows(table))
    assert len(rows) == ROWS
    assert list(rows[2]) == ["id", "image", "label", "digit"]
    assert rows[2]["id"] == 2 and rows[2]["label"] == "digit 2" and rows[2]["digit"] == 2
    image = rows[2]["image"]
    assert image.shape == (1, 8, 8) and np.array_equal(image.numpy(), images[2])
    assert image.untyped_storage().nbytes() == image.numel() * image.element_size()  # its own copy, not a view
    collated = next(iter(DataLoader(rows, batch_size=4)))  # type: ignore[arg-type]  # a list is a map-style dataset
    assert collated["image"].shape == (4, 1, 8, 8)


def test_rows_without_images_are_plain_python() -> None:
    table = pa.table({"a": [1, None], "b": ["x", "y"]})
    assert list(table_to_rows(table)) == [{"a": 1, "b": "x"}, {"a": None, "b": "y"}]


def test_null_images_are_refused(table: pa.Table) -> None:
    column = table.column("image").combine_chunks()
    nulls = pa.ExtensionArray.from_storage(
        column.type, pa.FixedSizeListArray.from_arrays(column.storage.values, 64, mask=pa.array([True] + [False] * 9))
    )
    with pytest.raises(DataError, match="column 'image' has 1 null images"):
        table_to_batch(table.set_column(1, "image", nulls))


def write_dataset(url: str, table: pa.Table) -> None:
    """`table` as committed shards of SIZES rows: the real shard writer and manifest, no Ray."""
    records: list[ShardRecord] = []
    first = 0
    for index, rows in enumerate(SIZES):
        records.append(write_shard(table.slice(first, rows), url, index, shard_name(index)))
        first += rows
    manifest = Manifest(
        run_id="images-test",
        rows=first,
        shards=records,
        schema=schema_json(table.schema),
        bundle_fingerprint="f" * 64,
        model_url="memory://model",
        statistics_url="memory://model/statistics",
        sampler={"name": "gaussian"},
        seed=0,
        rows_per_shard=max(SIZES),
        config={},
    )
    write_manifest(url, manifest)


@pytest.fixture(scope="module")
def dataset_url(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("images") / "synthetic")
    write_dataset(url, table)
    return url


@pytest.mark.parametrize("shuffle", [False, True])
def test_synthetic_dataset_batches(dataset_url: str, images: np.ndarray, shuffle: bool) -> None:
    batches = list(SyntheticDataset(dataset_url, batch_size=4, shuffle=shuffle, seed=1))
    assert [batch["image"].shape for batch in batches] == [(4, 1, 8, 8), (4, 1, 8, 8), (2, 1, 8, 8)]
    ids = torch.cat([batch["id"] for batch in batches]).numpy()
    assert sorted(ids.tolist()) == list(range(ROWS))
    assert (ids != np.arange(ROWS)).any() == shuffle
    assert np.array_equal(torch.cat([batch["image"] for batch in batches]).numpy(), images[ids])
    assert batches[0]["label"] == [f"digit {i}" for i in ids[:4]]


def test_synthetic_dataset_rows(dataset_url: str, images: np.ndarray) -> None:
    dataset = SyntheticDataset(dataset_url, columns=["image", "digit"])
    rows = list(dataset)
    assert [row["digit"] for row in rows] == load_digits().target[:ROWS].tolist()
    assert all(row["image"].shape == (1, 8, 8) for row in rows)
    loaded = next(iter(DataLoader(dataset, batch_size=5)))
    assert loaded["image"].shape == (5, 1, 8, 8) and np.array_equal(loaded["image"].numpy(), images[:5])
