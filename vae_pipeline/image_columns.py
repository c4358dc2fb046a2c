"""Image columns as the pipeline stores them: Arrow's canonical fixed-shape tensor, one (C, H, W) image per row.

Every image the pipeline reads is converted to this type on the way in (data.py, image_inputs.py), and every image
it writes has it, so Parquet readers in any language see a tensor column with its shape and dim names. Arrays are
built with `ExtensionArray.from_storage` over a `FixedSizeListArray` in (C, H, W) order: pyarrow's
`from_numpy_ndarray` on a channels-last array records a permutation that does not survive a read back.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError

DIM_NAMES = ["C", "H", "W"]
UINT8 = pa.uint8()
IMAGE_VALUE_TYPES = (UINT8, pa.float32())

ArrayLike: TypeAlias = pa.Array | pa.ChunkedArray


def is_image_type(arrow_type: pa.DataType) -> bool:
    """A fixed-shape tensor of three dimensions (C, H, W): what the pipeline models as an image."""
    return isinstance(arrow_type, pa.FixedShapeTensorType) and len(arrow_type.shape) == 3


def image_shape(arrow_type: pa.DataType) -> tuple[int, int, int]:
    """(C, H, W) of an image column's type."""
    if not is_image_type(arrow_type):
        raise DataError(f"type {arrow_type} is not an image column (a 3-d arrow.fixed_shape_tensor)")
    channels, height, width = (int(size) for size in arrow_type.shape)
    return channels, height, width


def image_type(shape: tuple[int, int, int], value_type: pa.DataType = UINT8) -> pa.FixedShapeTensorType:
    """The canonical type of a (C, H, W) image column of uint8 or float32 values."""
    if value_type not in IMAGE_VALUE_TYPES:
        raise DataError(f"image values must be uint8 or float32, not {value_type}; cast the images first")
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"an image shape is (C, H, W) with positive sizes, got {tuple(shape)}")
    return pa.fixed_shape_tensor(value_type, list(shape), dim_names=DIM_NAMES)


def image_array(images: np.ndarray) -> pa.ExtensionArray:
    """(N, C, H, W) uint8 or float32 images -> a fixed-shape tensor array with the canonical type."""
    if images.ndim != 4:
        raise DataError(f"images must be an (N, C, H, W) array, got shape {images.shape}")
    value_type = pa.from_numpy_dtype(images.dtype)
    arrow_type = image_type(images.shape[1:], value_type)
    flat = pa.array(np.ascontiguousarray(images).reshape(-1), type=value_type)
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(images.shape[1:])))
    return pa.ExtensionArray.from_storage(arrow_type, storage)


def image_values(array: ArrayLike, column: str = "image") -> np.ndarray:
    """A fixed-shape tensor column -> (N, C, H, W) numpy array of its value type (a copy only across chunks)."""
    if not is_image_type(array.type):
        raise DataError(f"column '{column}' has type {array.type}, not an image column (arrow.fixed_shape_tensor)")
    if array.null_count:
        raise DataError(f"column '{column}' has {array.null_count} null images; drop those rows or fill them")
    shape = image_shape(array.type)
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    parts = [_chunk_values(chunk, shape) for chunk in chunks]
    if not parts:
        return np.empty((0, *shape), dtype=np.dtype(array.type.value_type.to_pandas_dtype()))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _chunk_values(chunk: pa.Array, shape: tuple[int, int, int]) -> np.ndarray:
    storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    flat = storage.flatten().to_numpy(zero_copy_only=False)  # flatten honours the chunk's offset
    return flat.reshape(len(chunk), *shape)


def image_columns(schema: pa.Schema) -> list[str]:
    """The names of the image columns of a schema, in order."""
    return [field.name for field in schema if is_image_type(field.type)]


def pixel_range(array: ArrayLike, column: str) -> tuple[float, float]:
    """(min, max) pixel of a batch of images, refusing NaN and infinity (no pixel value to become)."""
    values = image_values(array, column)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).reshape(len(values), -1).any(axis=1).sum())
        raise DataError(f"image column '{column}' has {bad} images with NaN or infinite pixels; fix or drop those rows")
    if not values.size:
        return np.inf, -np.inf
    return float(values.min()), float(values.max())
