"""Arrow columns to what a training loop takes: torch tensors for numbers, Python lists for everything else.

A column's tensor dtype follows from its Arrow field alone, never from the values in one batch, so every batch of
a column has the same dtype. Floats keep their width and hold nulls as NaN. Integers become int64 and booleans
bool, unless the field is nullable: then both become float64 with NaN for null, since no integer tensor can hold a
null (float64 is exact for integers up to 2**53). Strings, categoricals (Arrow dictionaries), dates, timestamps
and decimals become lists of Python values, with None for null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

Batch = dict[str, torch.Tensor | list[Any]]

_FLOAT_DTYPES = {16: torch.float16, 32: torch.float32, 64: torch.float64}


def table_to_batch(table: pa.Table) -> Batch:
    """Column name -> tensor (numbers) or list (everything else), in the table's column order."""
    return {field.name: column_to_torch(field, table.column(field.name)) for field in table.schema}


def column_to_torch(field: pa.Field, column: pa.ChunkedArray) -> torch.Tensor | list[Any]:
    """One column as a tensor or a list, following the rules in the module docstring."""
    kind = field.type
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
