"""Arrow columns to what a training loop takes: torch tensors for numbers, Python lists for everything else.

A column's tensor dtype follows from its Arrow field alone, never from the values in one batch, so every batch of
a column has the same dtype. Floats keep their width and hold nulls as NaN. Integers become int64 and booleans
bool, unless the field is nullable: then both become float64 with NaN for null, since no integer tensor can hold a
null (float64 is exact for integers up to 2**53). Strings, categoricals (Arrow dictionaries), dates, timestamps
and decimals become lists of Python values, with None for null.

Image columns (Arrow's fixed-shape tensor of three dimensions, see `vae_pipeline.image_columns`) become one
(B, C, H, W) tensor per batch, or one (C, H, W) tensor per row, of the stored value type: uint8 stays uint8 and
float32 stays float32. Scaling pixels to a model's input range is the training job's step, not the reader's: a
uint8 batch is a quarter of the float32 one to move between processes, and the reader cannot know the range the
model wants. An image column cannot hold null images (`image_values` refuses them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from vae_pipeline.image_columns import image_values, is_image_type

Batch = dict[str, torch.Tensor | list[Any]]

_FLOAT_DTYPES = {16: torch.float16, 32: torch.float32, 64: torch.float64}


def table_to_batch(table: pa.Table) -> Batch:
    """Column name -> tensor (numbers) or list (everything else), in the table's column order."""
    return {field.name: column_to_torch(field, table.column(field.name)) for field in table.schema}


def table_to_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """One `{column: value}` dict per row: image columns as (C, H, W) tensors, the rest as Python values."""
    images = {name: image_tensor(table.column(name), name) for name in table.column_names if _is_image(table, name)}
    if not images:
        yield from table.to_pylist()
        return
    others = table.drop_columns(list(images)).to_pylist()
    for index, row in enumerate(others):
        # A clone, not a view: a row must not keep its whole read block alive, nor send it between processes.
        yield {name: images[name][index].clone() if name in images else row[name] for name in table.column_names}


def column_to_torch(field: pa.Field, column: pa.ChunkedArray) -> torch.Tensor | list[Any]:
    """One column as a tensor or a list, following the rules in the module docstring."""
    kind = field.type
    if is_image_type(kind):
        return image_tensor(column, field.name)
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
        column = pc.cast(column, kind)
    if pa.types.is_floating(kind):
        return _tensor(pc.cast(column, kind), _FLOAT_DTYPES[kind.bit_width])
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        if field.nullable:
            return _tensor(pc.cast(column, pa.float64()), torch.float64)
        return _tensor(column, torch.bool if pa.types.is_boolean(kind) else torch.int64)
    return column.to_pylist()


def _tensor(column: pa.ChunkedArray, dtype: torch.dtype) -> torch.Tensor:
    values = np.asarray(column.to_numpy())  # float nulls come out as NaN
    return torch.tensor(values, dtype=dtype)  # a copy: Arrow's buffers are read-only


def image_tensor(column: pa.ChunkedArray | pa.Array, name: str = "image") -> torch.Tensor:
    """An image column -> a (B, C, H, W) tensor of its stored dtype (uint8 or float32), copied out of Arrow."""
    return torch.tensor(image_values(column, name))  # a copy: Arrow's buffers are read-only


def _is_image(table: pa.Table, name: str) -> bool:
    return is_image_type(table.schema.field(name).type)
