"""Fashion-MNIST (Zalando, MIT): 70,000 labelled 28x28 grey images, read from the Debian package's idx files.

`apt-get install dataset-fashion-mnist` (or `make bench-install`) puts the official gzipped idx files under
`/usr/share/datasets/fashion-mnist/`; nothing is downloaded at run time. A small class-balanced slice of the test
split ships with the repository at `SLICE_PATH` (see data/README.md and scripts/vendor_fashion_mnist.py), so tests
and demos need no install.

The idx format (LeCun's MNIST page): a big-endian header of two zero bytes, a value-type code (0x08 = uint8) and
the number of dimensions, then one big-endian int32 per dimension, then the values in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from vae_pipeline import storage
from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import image_array

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
SLICE_PATH = str(Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-slice.parquet")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SIZE = 28
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_ROWS = {"train": 60_000, "test": 10_000}  # in the official files; a smaller root (a test's) is read as it is

Split = Literal["train", "test"]

_UINT8_CODE = 0x08
_INSTALL_HINT = "run `make bench-install` (or `apt-get install dataset-fashion-mnist`)"


def is_installed(root: str = DEFAULT_ROOT) -> bool:
    """Whether all four idx files of both splits are under `root`."""
    return all(storage.exists(storage.join_url(root, name)) for names in FILES.values() for name in names)


def load_fashion_mnist(split: Split, root: str = DEFAULT_ROOT) -> tuple[np.ndarray, np.ndarray]:
    """One split's images and labels, in the order of the official files.

    Args:
        split: "train" (60,000 rows) or "test" (10,000 rows).
        root: the folder holding the gzipped idx files (the Debian package's by default).

    Returns:
        (images, labels): uint8 (N, 1, 28, 28) and int64 (N,) class indices into `CLASS_NAMES`.

    Raises:
        DataError: an unknown split, the files are missing, or a file is not a valid idx file of this data set.
    """
    if split not in FILES:
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    image_url, label_url = (storage.join_url(root, name) for name in FILES[split])
    for url in (image_url, label_url):
        if not storage.exists(url):
            raise DataError(f"Fashion-MNIST is not installed: {url} is missing; {_INSTALL_HINT}")
    images = read_idx(storage.read_bytes(image_url), ndim=3, name=image_url)
    labels = read_idx(storage.read_bytes(label_url), ndim=1, name=label_url)
    _check_split(images, labels, image_url, label_url)
    return images[:, np.newaxis].copy(), labels.astype(np.int64)  # copies: frombuffer's arrays are read-only


def read_idx(payload: bytes, *, ndim: int, name: str = "idx file") -> np.ndarray:
    """A gzipped (or plain) uint8 idx file's bytes -> its array, after checking the header against the size.

    Raises:
        DataError: the bytes are not a uint8 idx file of `ndim` dimensions, or hold more or fewer values than the
            header says.
    """
    data = _gunzip(payload, name) if payload[:2] == b"\x1f\x8b" else payload
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != _UINT8_CODE or data[3] != ndim:
        magic = int.from_bytes(data[:4].ljust(4, b"\x00"), "big")
        expected = (_UINT8_CODE << 8) | ndim
        raise DataError(
            f"{name} has magic number {magic:#010x}, expected {expected:#010x} (uint8 idx, {ndim}-d); "
            "it is not an idx file of this data set; reinstall it"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated inside its header ({len(data)} bytes); reinstall it")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    values = len(data) - header
    if values != int(np.prod(shape)):
        raise DataError(
            f"{name} header says shape {shape} ({int(np.prod(shape))} values) but holds {values}; reinstall it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _gunzip(payload: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name} is not a readable gzip file ({exc}); reinstall it") from None


def _check_split(images: np.ndarray, labels: np.ndarray, image_url: str, label_url: str) -> None:
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{image_url} holds {images.shape[1:]} images, expected 28x28; reinstall the package")
    if len(images) != len(labels):
        raise DataError(f"{image_url} has {len(images)} images but {label_url} {len(labels)} labels; reinstall it")
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise DataError(f"{label_url} has label {int(labels.max())}, beyond the 10 classes; reinstall it")


def fashion_mnist_table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """Images and class indices -> a table of `image` (canonical image column) and `label` (class name strings).

    Names rather than indices so a report or a generated table reads "Sneaker", not 7.

    Raises:
        DataError: images are not (N, 1, 28, 28) uint8, or labels are not N class indices in [0, 10).
    """
    if images.dtype != np.uint8 or images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"images must be uint8 (N, 1, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise DataError(f"labels must be one class index per image ({len(images)},), got shape {labels.shape}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(CLASS_NAMES)):
        raise DataError(f"labels must be class indices in [0, 10), got {int(labels.min())}..{int(labels.max())}")
    names = np.asarray(CLASS_NAMES, dtype=object)[labels.astype(np.int64)]
    return pa.table({"image": image_array(images), "label": pa.array(names, type=pa.string())})


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` row indices of each class, drawn without replacement and then shuffled together, seeded.

    Raises:
        DataError: a class has fewer than `per_class` rows.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(len(CLASS_NAMES)):
        rows = np.flatnonzero(labels == label)
        if len(rows) < per_class:
            raise DataError(f"class {CLASS_NAMES[label]!r} has {len(rows)} rows, fewer than {per_class}; ask fewer")
        chosen.append(np.sort(rng.choice(rows, size=per_class, replace=False)))
    return rng.permutation(np.concatenate(chosen))
