"""Images in the layouts users have, converted to the canonical (C, H, W) tensor column on the way in.

Three column layouts hold images the pipeline can read: encoded files (binary PNG or JPEG bytes), Hugging Face's
image feature (`struct<bytes, path>`) and Ray Data's own tensor types; a canonical fixed-shape tensor is taken as it
is (a MedMNIST-style `.npz` archive is read by `npz_input.py`). `plan_images` decides once,
from the schema and the first image, how each column converts; `ImageConversion.convert` applies that to every
batch, in `TableSource.batches()` and in Ray Data's `map_batches`, so nothing downstream ever sees bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
from PIL import Image, UnidentifiedImageError

from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import IMAGE_VALUE_TYPES, image_array, image_type

Layout = Literal["tensor", "encoded", "huggingface", "ray_tensor"]
Batch = TypeVar("Batch", pa.RecordBatch, pa.Table)
RowNamer = Callable[[int], str]
# Ray Data writes these when it stores numpy arrays; without Ray imported they read back as plain lists.
RAY_TENSOR_NAMES = frozenset({"ray.data.arrow_tensor", "ray.data.arrow_tensor_v2"})
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_PROBE_ROWS = 256


@dataclass(frozen=True)
class ColumnConversion:
    """How one column's values become canonical images: its layout, and the (C, H, W) every row must have."""

    name: str
    layout: Layout
    shape: tuple[int, int, int]
    value_type: pa.DataType  # uint8 or float32
    shape_row: int = 0  # the row where `shape` was seen, for the two-shapes message

    @property
    def arrow_type(self) -> pa.FixedShapeTensorType:
        return image_type(self.shape, self.value_type)

    def convert(self, array: pa.Array | pa.ChunkedArray, first_row: int | None) -> pa.Array | pa.ChunkedArray:
        """The column's values as canonical images; `first_row` is the batch's row in the table, if known."""
        if isinstance(array, pa.Array):
            return image_array(self._pixels(array, _row_namer(first_row, 0)))
        chunks, offset = [], 0
        for chunk in array.chunks:
            chunks.append(image_array(self._pixels(chunk, _row_namer(first_row, offset))))
            offset += len(chunk)
        return pa.chunked_array(chunks, type=self.arrow_type)

    def _pixels(self, chunk: pa.Array, where: RowNamer) -> np.ndarray:
        if self.layout == "ray_tensor":
            return _tensor_pixels(chunk, self.name, self.shape)
        encoded = _present(self.name, *_encoded(chunk, self.layout), where)
        pixels = np.empty((len(encoded), *self.shape), dtype=np.uint8)
        for index, data in enumerate(encoded):
            image = decode_image(data, self.name, where(index))
            if image.shape != self.shape:
                raise DataError(
                    f"image column '{self.name}' holds images of two shapes: {self.shape} at row {self.shape_row} "
                    f"and {image.shape} at {where(index)}; resize the images to one size"
                )
            pixels[index] = image
        return pixels


@dataclass(frozen=True)
class ImageConversion:
    """Which columns become canonical images and how; empty for a table whose images (if any) already are."""

    columns: tuple[ColumnConversion, ...] = ()

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """The schema after conversion: converted columns carry their canonical type."""
        for column in self.columns:
            index = schema.get_field_index(column.name)
            schema = schema.set(index, pa.field(column.name, column.arrow_type))
        return schema

    def convert(self, batch: Batch, first_row: int | None = None) -> Batch:
        """A record batch or table with every planned column converted (usable as Ray Data's `map_batches` fn).

        Args:
            batch: rows read from the table; columns not in the plan pass through untouched.
            first_row: the batch's first row in the whole table, so errors name table rows; None under Ray Data,
                whose batches do not know where they start.

        Raises:
            DataError: a null image, bytes that do not decode, or an image of another shape than the first.
        """
        for column in self.columns:
            index = batch.schema.get_field_index(column.name)
            if index >= 0:
                converted = column.convert(batch.column(index), first_row)
                batch = batch.set_column(index, pa.field(column.name, column.arrow_type), converted)
        return batch


def image_layout(field: pa.Field) -> Layout | None:
    """The image layout a column holds, or None for a column that holds no images."""
    arrow_type = field.type
    if isinstance(arrow_type, pa.FixedShapeTensorType):
        return "tensor"
    if _ray_tensor(field) is not None:
        return "ray_tensor"
    if _is_binary(arrow_type):
        return "encoded"
    if _is_huggingface_image(arrow_type):
        return "huggingface"
    return None


def plan_images(schema: pa.Schema, dataset: pa_ds.Dataset) -> ImageConversion:
    """Check a table's image columns and decide how each becomes canonical (reads the first image of encoded ones).

    Raises:
        DataError: more than one image column, a tensor that is not a 3-d (C, H, W) of uint8 or float32, an
            all-null or undecodable first image.
    """
    layouts = {field.name: layout for field in schema if (layout := image_layout(field)) is not None}
    if len(layouts) > 1:
        raise DataError(
            f"tables with more than one image column are not supported yet (columns {', '.join(layouts)}); "
            "drop one with data.drop_columns"
        )
    columns = []
    for name, layout in layouts.items():
        field = schema.field(name)
        ray_tensor = _ray_tensor(field)
        if layout == "tensor":
            _checked_shape(name, tuple(field.type.shape), field.type.value_type)
        elif ray_tensor is not None:
            shape, value_type = ray_tensor
            columns.append(ColumnConversion(name, layout, _checked_shape(name, shape, value_type), value_type))
        else:
            row, image = _first_image(dataset, name, layout)
            shape = _checked_shape(name, image.shape, pa.uint8())
            columns.append(ColumnConversion(name, layout, shape, pa.uint8(), row))
    return ImageConversion(tuple(columns))


def decode_image(data: bytes, column: str, where: str) -> np.ndarray:
    """Encoded image bytes -> (C, H, W) uint8: grayscale 1 channel, RGB 3, RGBA 4 (other modes become RGB)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode.startswith(("I", "F")):  # converting to 8 bits would clip every value above 255
                raise DataError(
                    f"column '{column}' {where} is a {image.mode} image, more than 8 bits per pixel; "
                    "save the images as 8-bit PNG or JPEG, or as a float32 tensor column"
                )
            pixels = np.asarray(_canonical_mode(image))
    except _DECODE_ERRORS as exc:
        # Pillow's own message for unknown bytes names an in-memory file object, nothing the user can act on.
        reason = "not a PNG, JPEG or other format Pillow reads" if isinstance(exc, UnidentifiedImageError) else exc
        raise DataError(
            f"column '{column}' {where} cannot be decoded as an image ({first_line(reason)}); "
            "if the column holds no images, add it to data.drop_columns"
        ) from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _canonical_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "RGB", "RGBA"):
        return image
    if image.mode == "1":
        return image.convert("L")  # 0 and 255, not 0 and 1: the same scale as every other uint8 image
    if image.mode == "LA":
        return image.convert("RGBA")  # keeps the alpha channel, as RGBA does
    if image.mode in ("P", "PA"):
        return image.convert(_palette_mode(image))
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _palette_mode(image: Image.Image) -> str:
    """A palette image: RGBA when it has transparency, L when every palette entry is gray, else RGB."""
    if image.mode == "PA" or "transparency" in image.info:
        return "RGBA"
    palette = image.getpalette() or []
    gray = all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return "L" if gray else "RGB"


def _first_image(dataset: pa_ds.Dataset, name: str, layout: Layout) -> tuple[int, np.ndarray]:
    """The first non-null image of an encoded column and its row: its shape is the one every row must have."""
    offset = 0
    for batch in dataset.to_batches(columns=[name], batch_size=_PROBE_ROWS, use_threads=False):
        encoded, _ = _encoded(batch.column(0), layout)
        for index, data in enumerate(encoded):
            if data is not None:
                return offset + index, decode_image(data, name, f"row {offset + index}")
        offset += batch.num_rows
    raise DataError(f"column '{name}' is all null; add it to data.drop_columns")


def _encoded(chunk: pa.Array, layout: Layout) -> tuple[list[bytes | None], list[str | None]]:
    """Each row's encoded bytes, and for Hugging Face's layout each row's path (None elsewhere)."""
    if layout == "encoded":
        return chunk.to_pylist(), [None] * len(chunk)
    children = chunk.flatten()  # honours the chunk's offset and its nulls
    names = [chunk.type.field(i).name for i in range(chunk.type.num_fields)]
    return children[names.index("bytes")].to_pylist(), children[names.index("path")].to_pylist()


def _present(name: str, encoded: list[bytes | None], paths: list[str | None], where: RowNamer) -> list[bytes]:
    """Every row's bytes, refusing null images (a Hugging Face row may hold only a path, which is not followed)."""
    nulls = [index for index, data in enumerate(encoded) if data is None]
    if not nulls:
        return [data for data in encoded if data is not None]
    first = nulls[0]
    hint = ""
    if paths[first] is not None:
        hint = f" ({where(first)} holds only the path {paths[first]!r}: store the image bytes in the column)"
    raise DataError(
        f"image column '{name}' has {len(nulls)} null images in this batch, the first at {where(first)}{hint}; "
        "drop those rows or fill them"
    )


def _tensor_pixels(chunk: pa.Array, name: str, shape: tuple[int, int, int]) -> np.ndarray:
    """A Ray tensor chunk (list storage, one flattened tensor per row) -> (N, C, H, W)."""
    storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    if storage.null_count:
        raise DataError(f"image column '{name}' has {storage.null_count} null images; drop those rows or fill them")
    size = int(np.prod(shape))
    lengths = pc.list_value_length(storage).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != size).any():
        raise DataError(f"image column '{name}' has rows whose tensors do not hold {shape} values; rewrite the column")
    return storage.flatten().to_numpy(zero_copy_only=False).reshape(len(storage), *shape)


def _row_namer(first_row: int | None, offset: int) -> RowNamer:
    """How errors name a chunk's row: its row in the table, or only in its batch under Ray Data."""
    if first_row is None:
        return lambda index: f"row {offset + index} of a batch read by Ray Data"
    return lambda index: f"row {first_row + offset + index}"


def _ray_tensor(field: pa.Field) -> tuple[tuple[int, ...], pa.DataType] | None:
    """(shape, value type) of a Ray Data tensor column, read from its type or, with Ray not imported, its metadata."""
    arrow_type = field.type
    if isinstance(arrow_type, pa.ExtensionType) and arrow_type.extension_name in RAY_TENSOR_NAMES:
        return tuple(int(size) for size in arrow_type.shape), arrow_type.storage_type.value_type
    metadata = field.metadata or {}
    name = metadata.get(b"ARROW:extension:name", b"").decode(errors="replace")
    if name not in RAY_TENSOR_NAMES or not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        return None
    try:  # JSON since Ray 2.x; older files hold a cloudpickle, which is never unpickled here
        shape = json.loads(metadata.get(b"ARROW:extension:metadata", b""))
    except ValueError:
        return None
    if not isinstance(shape, list) or not all(isinstance(size, int) for size in shape):
        return None
    return tuple(shape), arrow_type.value_type


def _is_binary(arrow_type: pa.DataType) -> bool:
    return pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_binary_view(arrow_type)


def _is_huggingface_image(arrow_type: pa.DataType) -> bool:
    """`datasets.Image()` as Parquet stores it: struct<bytes: binary, path: string>."""
    if not pa.types.is_struct(arrow_type):
        return False
    fields = {arrow_type.field(i).name: arrow_type.field(i).type for i in range(arrow_type.num_fields)}
    return set(fields) == {"bytes", "path"} and _is_binary(fields["bytes"])


def _checked_shape(name: str, shape: tuple[int, ...], value_type: pa.DataType) -> tuple[int, int, int]:
    """A tensor column's shape, if it is an image's: 3-d (C, H, W) of uint8 or float32."""
    if len(shape) == 2:
        raise DataError(
            f"column '{name}' holds 2-d tensors of shape {shape}; an image needs a channel dimension: "
            f"store them as (1, {shape[0]}, {shape[1]})"
        )
    if len(shape) != 3:
        raise DataError(
            f"column '{name}' holds tensors of shape {shape}, not 3-d (C, H, W) images; "
            "reshape them or add the column to data.drop_columns"
        )
    if value_type not in IMAGE_VALUE_TYPES:
        raise DataError(f"image column '{name}' has {value_type} values; cast the images to uint8 or float32")
    channels, height, width = shape
    return channels, height, width


def first_line(reason: BaseException | str) -> str:
    text = str(reason).strip()
    return text.splitlines()[0][:200] if text else type(reason).__name__
