"""fashion_mnist.py: the idx reader on tiny files written here, the table, the slice drawing and the vendored file.

The test that reads the real Debian package is skipped where it is not installed (`make bench-install`).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_pipeline.errors import DataError
from vae_pipeline.fashion_mnist import (
    CLASS_NAMES,
    FILES,
    SLICE_PATH,
    SPLIT_ROWS,
    fashion_mnist_table,
    is_installed,
    load_fashion_mnist,
    read_idx,
    stratified_indices,
)
from vae_pipeline.image_columns import image_shape, image_values

SLICE_ROWS = 3000


def idx_bytes(values: np.ndarray, *, magic: int | None = None, compress: bool = True) -> bytes:
    """A uint8 idx file holding `values`, gzipped unless told not to; `magic` overrides the header's first word."""
    header = magic if magic is not None else (0x08 << 8) | values.ndim
    payload = header.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in values.shape)
    payload += values.astype(np.uint8).tobytes()
    return gzip.compress(payload, mtime=0) if compress else payload


def tiny_images(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(rows, 28, 28), dtype=np.uint8)
    labels = (np.arange(rows) * 3 % 10).astype(np.uint8)
    return images, labels


def write_root(root: Path, rows: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Both splits as tiny idx gz files under `root` (the same rows in each)."""
    images, labels = tiny_images(rows)
    root.mkdir(parents=True, exist_ok=True)
    for image_name, label_name in FILES.values():
        (root / image_name).write_bytes(idx_bytes(images))
        (root / label_name).write_bytes(idx_bytes(labels))
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(compress: bool) -> None:
    images, labels = tiny_images(3)
    assert np.array_equal(read_idx(idx_bytes(images, compress=compress), ndim=3), images)
    assert np.array_equal(read_idx(idx_bytes(labels, compress=compress), ndim=1), labels)


@pytest.mark.parametrize(
    ("magic", "ndim"),
    [(0x00000801, 3), (0x00000803, 1), (0x00000D03, 3), (0x01000803, 3)],
    ids=["labels-as-images", "images-as-labels", "float-values", "nonzero-lead"],
)
def test_read_idx_refuses_a_bad_magic_number(magic: int, ndim: int) -> None:
    with pytest.raises(DataError, match=f"magic number {magic:#010x}, expected {(0x08 << 8) | ndim:#010x}"):
        read_idx(idx_bytes(tiny_images(2)[0], magic=magic), ndim=ndim)


def test_read_idx_refuses_a_size_the_header_does_not_give() -> None:
    payload = idx_bytes(tiny_images(2)[0], compress=False)
    with pytest.raises(DataError, match=r"header says shape \(2, 28, 28\) \(1568 values\) but holds 1567"):
        read_idx(payload[:-1], ndim=3)
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(payload[:9], ndim=3)


def test_read_idx_refuses_a_broken_gzip() -> None:
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_idx(idx_bytes(tiny_images(2)[0])[:40], ndim=3, name="broken.gz")


def test_load_from_a_root(tmp_path: Path) -> None:
    images, _ = write_root(tmp_path)
    assert is_installed(str(tmp_path))
    for split in ("train", "test"):
        got_images, got_labels = load_fashion_mnist(split, root=str(tmp_path))
        assert got_images.dtype == np.uint8 and got_images.shape == (5, 1, 28, 28)
        assert got_labels.dtype == np.int64 and got_labels.tolist() == [0, 3, 6, 9, 2]
        assert np.array_equal(got_images[:, 0], images)
        assert got_images.flags.writeable


def test_missing_package_says_how_to_install(tmp_path: Path) -> None:
    assert not is_installed(str(tmp_path))
    with pytest.raises(DataError, match=r"not installed: .*t10k-images-idx3-ubyte.gz is missing; run `make bench-ins"):
        load_fashion_mnist("test", root=str(tmp_path))


def test_load_refuses_bad_splits_and_files(tmp_path: Path) -> None:
    write_root(tmp_path)
    with pytest.raises(DataError, match="split must be 'train' or 'test', got 'valid'"):
        load_fashion_mnist("valid", root=str(tmp_path))  # type: ignore[arg-type]
    (tmp_path / FILES["test"][1]).write_bytes(idx_bytes(np.array([0, 1, 2, 3, 10], dtype=np.uint8)))
    with pytest.raises(DataError, match="has label 10, beyond the 10 classes"):
        load_fashion_mnist("test", root=str(tmp_path))
    (tmp_path / FILES["test"][1]).write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DataError, match=r"has 5 images but .* 4 labels"):
        load_fashion_mnist("test", root=str(tmp_path))
    (tmp_path / FILES["test"][0]).write_bytes(idx_bytes(np.zeros((4, 8, 8), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"holds \(8, 8\) images, expected 28x28"):
        load_fashion_mnist("test", root=str(tmp_path))


def test_table_has_image_and_class_names() -> None:
    images, labels = tiny_images(4)
    table = fashion_mnist_table(images[:, np.newaxis], labels.astype(np.int64))
    assert table.column_names == ["image", "label"]
    assert image_shape(table.schema.field("image").type) == (1, 28, 28)
    assert table.schema.field("label").type == pa.string()
    assert table.column("label").to_pylist() == ["T-shirt/top", "Dress", "Shirt", "Ankle boot"]
    assert np.array_equal(image_values(table.column("image"))[:, 0], images)


def test_table_refuses_wrong_inputs() -> None:
    images, labels = tiny_images(2)
    with pytest.raises(DataError, match=r"uint8 \(N, 1, 28, 28\), got uint8 \(2, 28, 28\)"):
        fashion_mnist_table(images, labels)
    with pytest.raises(DataError, match=r"one class index per image \(2,\), got shape \(3,\)"):
        fashion_mnist_table(images[:, np.newaxis], np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"class indices in \[0, 10\), got -1..3"):
        fashion_mnist_table(images[:, np.newaxis], np.array([-1, 3]))


def test_stratified_indices_are_balanced_shuffled_and_seeded() -> None:
    labels = np.arange(200) % 10  # 20 rows of each class
    chosen = stratified_indices(labels, 7, seed=3)
    assert len(chosen) == 70 and len(set(chosen.tolist())) == 70
    assert np.bincount(labels[chosen], minlength=10).tolist() == [7] * 10
    assert not np.array_equal(np.sort(labels[chosen]), labels[chosen])  # classes are mixed, not in blocks
    assert np.array_equal(chosen, stratified_indices(labels, 7, seed=3))
    assert not np.array_equal(chosen, stratified_indices(labels, 7, seed=4))
    with pytest.raises(DataError, match="class 'T-shirt/top' has 20 rows, fewer than 21"):
        stratified_indices(labels, 21, seed=0)


def test_vendored_slice_schema_shape_and_balance() -> None:
    table = pq.read_table(SLICE_PATH)
    assert table.num_rows == SLICE_ROWS
    assert table.column_names == ["image", "label"]
    image_type = table.schema.field("image").type
    assert image_shape(image_type) == (1, 28, 28) and image_type.value_type == pa.uint8()
    assert image_type.dim_names == ["C", "H", "W"]
    labels = table.column("label").to_pylist()
    assert {name: labels.count(name) for name in CLASS_NAMES} == dict.fromkeys(CLASS_NAMES, SLICE_ROWS // 10)
    assert labels[:10] != sorted(labels[:10])  # shuffled, not grouped by class
    assert image_values(table.column("image")).shape == (SLICE_ROWS, 1, 28, 28)


@pytest.mark.skipif(not is_installed(), reason="dataset-fashion-mnist is not installed (make bench-install)")
def test_installed_package_and_slice_are_the_test_split() -> None:
    images, labels = load_fashion_mnist("test")
    assert images.shape == (SPLIT_ROWS["test"], 1, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    # The slice is exactly what scripts/vendor_fashion_mnist.py draws with its defaults (300 per class, seed 0).
    rows = stratified_indices(labels, SLICE_ROWS // 10, seed=0)
    table = pq.read_table(SLICE_PATH)
    assert np.array_equal(image_values(table.column("image")), images[rows])
    assert table.column("label").to_pylist() == [CLASS_NAMES[label] for label in labels[rows]]
