"""Column kind inference, done in the same single streaming pass that gathers each column's profile.

Floats, decimals and temporal types are continuous; strings, booleans and dictionaries are categorical;
integers are categorical when they take at most `categorical_max_distinct` values, which is only known once the
pass is over. `data.column_kinds` overrides the inference; the label column is always categorical.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.transforms.arrow_types import is_string, is_temporal
from vae_pipeline.transforms.profile import ColumnProfile

CONTINUOUS, CATEGORICAL, INTEGER = "continuous", "categorical", "integer"  # INTEGER: decided after the pass


def _categorical_ok(arrow_type: pa.DataType) -> bool:
    """Types whose values are JSON-representable categories (temporal ones through their integer)."""
    simple = (pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating, is_string, is_temporal)
    return any(check(arrow_type) for check in simple)


def _default_kind(field: pa.Field) -> str:
    arrow_type = field.type
    if pa.types.is_null(arrow_type):
        raise DataError(f"column '{field.name}' has only nulls (type null); drop it with data.drop_columns")
    if pa.types.is_integer(arrow_type):
        return INTEGER
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type) or is_temporal(arrow_type):
        return CONTINUOUS
    if pa.types.is_dictionary(arrow_type) and _categorical_ok(arrow_type.value_type):
        return CATEGORICAL
    if pa.types.is_boolean(arrow_type) or is_string(arrow_type):
        return CATEGORICAL
    raise DataError(
        f"column '{field.name}' has type {arrow_type}, which the transform cannot encode "
        "(supported: numbers, dates, timestamps, strings, booleans, dictionaries); drop it with data.drop_columns"
    )


def plan_kind(field: pa.Field, override: str | None, *, is_label: bool = False) -> str:
    """The column's kind before the pass: continuous, categorical, or integer (decided by its distinct count)."""
    default = _default_kind(field)
    wanted = override or (CATEGORICAL if is_label else None)
    if wanted is None or wanted == default:
        return default
    if is_label and wanted == CONTINUOUS:
        raise DataError(
            f"column '{field.name}' is data.label_column, so it must be categorical; "
            "remove its continuous entry from data.column_kinds"
        )
    if wanted == CONTINUOUS and default != INTEGER:
        raise DataError(
            f"column '{field.name}' has type {field.type}, which cannot be continuous; "
            "remove it from data.column_kinds or drop it with data.drop_columns"
        )
    if wanted == CATEGORICAL and not _categorical_ok(field.type):
        raise DataError(
            f"column '{field.name}' has type {field.type}, which cannot be categorical; "
            "cast it to string first or remove it from data.column_kinds"
        )
    return wanted


def check_names(schema: pa.Schema, config: DataConfig) -> None:
    """Every column named in the config exists in the schema."""
    named = {name: "data.column_kinds" for name in config.column_kinds}
    if config.label_column:
        named[config.label_column] = "data.label_column"
    for name, key in named.items():
        if name not in schema.names:
            raise DataError(
                f"{key} names column '{name}', which is not in the data (after data.drop_columns); "
                f"available columns: {schema.names}"
            )


def profile_columns(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, plans: dict[str, str], config: DataConfig, seed: int
) -> dict[str, ColumnProfile]:
    """One pass over the batches; each column gets its own generator so batching does not change the sample."""
    generators = [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(len(schema))]
    profiles = {}
    for field, rng in zip(schema, generators, strict=True):
        plan = plans[field.name]
        cap = {CONTINUOUS: 0, CATEGORICAL: config.max_categories}.get(
            plan, max(config.categorical_max_distinct, config.max_categories)
        )
        reservoir = 0 if plan == CATEGORICAL else config.fit_sample_rows
        profiles[field.name] = ColumnProfile(field.name, field.type, cap, reservoir, rng)
    for batch in batches:
        for field in schema:
            profiles[field.name].update(_column(batch, field))
    return profiles


def resolve_kind(plan: str, profile: ColumnProfile, config: DataConfig) -> str:
    """The final kind: an integer column with few distinct values is categorical."""
    if plan != INTEGER:
        return plan
    many = profile.overflowed or profile.n_distinct > config.categorical_max_distinct
    return CONTINUOUS if many else CATEGORICAL


def _column(batch: pa.RecordBatch, field: pa.Field) -> pa.Array:
    if field.name not in batch.schema.names:
        raise DataError(f"a record batch lacks column '{field.name}'; it has {batch.schema.names}")
    array = batch.column(field.name)
    if array.type != field.type:
        raise DataError(
            f"column '{field.name}' has type {array.type} in a record batch but {field.type} in the schema; "
            "cast the batches to one schema"
        )
    return array
