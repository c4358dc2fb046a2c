"""A MedMNIST-style `.npz` archive read as a table: an `image` column (the canonical tensor type) and a `label`.

MedMNIST ships each dataset as one archive of `train_images`, `train_labels`, `val_*` and `test_*` arrays; these
files are small (tens of MB at most), so the archive is read whole and served as an in-memory dataset (data.py).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import image_array
from vae_pipeline.image_inputs import first_line

NPZ_SPLITS = ("train", "val", "test")  # MedMNIST's names, and the order of the rows


def npz_table(content: bytes, url: str) -> pa.Table:
    """A MedMNIST-style `.npz` archive -> a table of `image` (canonical) and `label` (int64) columns.

    The archive holds `train_images` and `train_labels`, and optionally `val_*` and `test_*`; the rows are train,
    then val, then test, in file order (the pipeline makes its own holdout split). Images are (N, H, W) or
    channels-last (N, H, W, C), uint8 or float; labels (N,) or (N, 1) integers.

    Args:
        content: the file's bytes.
        url: the file's location (credentials redacted), for messages.

    Raises:
        DataError: not an .npz archive, missing arrays, or arrays of another shape or dtype.
    """
    arrays = _npz_arrays(content, url)
    splits = [split for split in NPZ_SPLITS if split == "train" or {f"{split}_images", f"{split}_labels"} & set(arrays)]
    missing = [
        f"{split}_{kind}" for split in splits for kind in ("images", "labels") if f"{split}_{kind}" not in arrays
    ]
    if missing:
        raise DataError(
            f"{url} has arrays {sorted(arrays)}, missing {missing}; expected train_images and train_labels, "
            "and optionally val_images/val_labels and test_images/test_labels"
        )
    images = {split: _npz_images(arrays[f"{split}_images"], f"{split}_images", url) for split in splits}
    labels = [_npz_labels(arrays[f"{split}_labels"], f"{split}_labels", len(images[split]), url) for split in splits]
    first = images["train"]
    for split, values in images.items():
        if values.shape[1:] != first.shape[1:] or values.dtype != first.dtype:
            raise DataError(
                f"{url}: train_images are {first.shape[1:]} {first.dtype} but {split}_images are "
                f"{values.shape[1:]} {values.dtype}; every split must hold images of one shape and dtype"
            )
    return pa.table({"image": image_array(np.concatenate(list(images.values()))), "label": np.concatenate(labels)})


def _npz_arrays(content: bytes, url: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(io.BytesIO(content), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(
                f"{url} holds one array, not an .npz archive of named arrays; "
                "write it with numpy.savez(path, train_images=..., train_labels=...)"
            )
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {url} as .npz: {first_line(exc)}; write it with numpy.savez or set data.format"
        ) from exc


def _npz_images(array: np.ndarray, name: str, url: str) -> np.ndarray:
    """(N, H, W) or channels-last (N, H, W, C) -> (N, C, H, W) uint8 or float32, without losing a value."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[3] in (1, 3, 4):
        array = array.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{url}: {name} has shape {array.shape}; images are (N, H, W) or channels-last (N, H, W, C) "
            "with C of 1, 3 or 4"
        )
    if array.dtype == np.uint8 or array.dtype == np.float32:
        return array
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and (not array.size or (array.min() >= 0 and array.max() <= 255)):
        return array.astype(np.uint8)  # 0..255 integers stored wider: the same values
    raise DataError(f"{url}: {name} has {array.dtype} values; save the images as uint8 (0..255) or float32")


def _npz_labels(array: np.ndarray, name: str, rows: int, url: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        raise DataError(
            f"{url}: {name} has shape {array.shape}, {array.shape[1]} labels per image (multi-label), "
            "which is not supported; keep one label per image"
        )
    if array.shape != (rows,):
        raise DataError(f"{url}: {name} has shape {array.shape} for {rows} images; labels are (N,) or (N, 1)")
    if array.dtype.kind not in "iu":
        raise DataError(f"{url}: {name} has {array.dtype} values; labels must be integers")
    return array.astype(np.int64)
