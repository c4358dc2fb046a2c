"""Arrow type helpers shared by the column transforms: which types are supported, their numeric and
categorical representations, and an exact JSON form of a type or schema.

Temporal types (date, timestamp, duration, time) are handled through the integer they are stored as, so
`view` restores them exactly (unit and time zone included).
"""

from __future__ import annotations

import base64
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ArrayLike: TypeAlias = pa.Array | pa.ChunkedArray

_INT32_TEMPORAL = (pa.types.is_date32, pa.types.is_time32)
_INT64_TEMPORAL = (pa.types.is_date64, pa.types.is_timestamp, pa.types.is_duration, pa.types.is_time64)


def is_temporal(arrow_type: pa.DataType) -> bool:
    """Date, time, timestamp or duration: a fixed-width integer underneath."""
    return any(check(arrow_type) for check in _INT32_TEMPORAL + _INT64_TEMPORAL)


def is_string(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type)


def storage_type(arrow_type: pa.DataType) -> pa.DataType:
    """The type values are compared and stored as: temporal -> its integer, dictionary -> its value type."""
    if pa.types.is_dictionary(arrow_type):
        return storage_type(arrow_type.value_type)
    if any(check(arrow_type) for check in _INT32_TEMPORAL):
        return pa.int32()
    if any(check(arrow_type) for check in _INT64_TEMPORAL):
        return pa.int64()
    return arrow_type


def dense_values(array: ArrayLike) -> pa.Array:
    """One contiguous array in the storage type: dictionaries decoded, temporal values viewed as integers."""
    if pa.types.is_dictionary(array.type):
        array = pc.cast(array, array.type.value_type)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    target = storage_type(array.type)
    return array.view(target) if target != array.type else array


def numeric_values(array: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with nulls as 0, boolean null mask) for a numeric, decimal or temporal column."""
    values = dense_values(array)
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    floats = pc.fill_null(pc.cast(values, pa.float64()), 0.0)
    return floats.to_numpy(zero_copy_only=False), nulls


def cast_strings(array: pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """A string array as `arrow_type`: a string, large string or string view type, or a dictionary of one."""
    if pa.types.is_dictionary(arrow_type):
        encoded = pc.dictionary_encode(pc.cast(array, arrow_type.value_type))
        return encoded.cast(arrow_type)
    return pc.cast(array, arrow_type) if array.type != arrow_type else array


def numeric_to_arrow(values: np.ndarray, nulls: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """Float64 values back to `arrow_type`; integers and temporal types must already be rounded."""
    mask = nulls if nulls.any() else None
    if pa.types.is_floating(arrow_type):
        return pa.array(values.astype(arrow_type.to_pandas_dtype(), copy=False), type=arrow_type, mask=mask)
    if pa.types.is_decimal(arrow_type):
        rounded = np.round(values, arrow_type.scale)
        return pc.cast(pa.array(rounded, type=pa.float64(), mask=mask), arrow_type, safe=False)
    target = storage_type(arrow_type)
    array = pa.array(values.astype(target.to_pandas_dtype()), type=target, mask=mask)
    return array.view(arrow_type) if target != arrow_type else array


def type_to_json(arrow_type: pa.DataType) -> str:
    """An exact, JSON-safe form of a type (base64 of a one-field IPC schema)."""
    return schema_to_json(pa.schema([pa.field("_", arrow_type)]))


def type_from_json(text: str) -> pa.DataType:
    return schema_from_json(text).field(0).type


def schema_to_json(schema: pa.Schema) -> str:
    """An exact, JSON-safe form of a schema: names, types, nullability and metadata survive."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_json(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
