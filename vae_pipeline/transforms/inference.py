"""The profile pass: each column's type family, checked overrides, and one streaming pass of bounded statistics.

Before the pass a column is only a type family (integer, number, temporal, string, categorical); its role
(roles.py) is decided from its profile once the pass is over. An override in `data.column_kinds` that cannot
apply to the column's type is refused before any row is read; the label column is always categorical.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import is_image_type
from vae_pipeline.transforms.arrow_types import is_string, is_temporal
from vae_pipeline.transforms.profile import ColumnProfile
from vae_pipeline.transforms.value_stats import ValueStats

INTEGER, NUMBER, TEMPORAL, STRING, CATEGORICAL = "integer", "number", "temporal", "string", "categorical"
IMAGE = "image"

# The overrides each family accepts; string columns are checked again after the pass (numbers, dates).
_ALLOWED = {
    INTEGER: {"continuous", "discrete", "categorical", "id", "constant"},
    NUMBER: {"continuous", "discrete", "categorical", "constant"},
    TEMPORAL: {"continuous", "datetime", "categorical", "constant"},
    STRING: {"categorical", "id", "datetime", "text", "constant", "continuous", "discrete"},
    CATEGORICAL: {"categorical", "constant"},
    IMAGE: set(),
}
COUNT_CAP = 10_000  # values counted exactly: a long tail's members, a text column's repeated values
HASH_CAP = 1 << 18  # distinct values hashed to tell ids (unique per row) from repeated values


def _categorical_ok(arrow_type: pa.DataType) -> bool:
    """Types whose values are JSON-representable categories (temporal ones through their integer)."""
    simple = (pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating, is_string, is_temporal)
    return any(check(arrow_type) for check in simple)


def _family(field: pa.Field) -> str:
    arrow_type = field.type
    if pa.types.is_null(arrow_type):
        raise DataError(f"column '{field.name}' has only nulls (type null); drop it with data.drop_columns")
    if is_image_type(arrow_type):
        return IMAGE
    if pa.types.is_integer(arrow_type):
        return INTEGER
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return NUMBER
    if is_temporal(arrow_type):
        return TEMPORAL
    if is_string(arrow_type) or (pa.types.is_dictionary(arrow_type) and is_string(arrow_type.value_type)):
        return STRING
    if pa.types.is_boolean(arrow_type) or (
        pa.types.is_dictionary(arrow_type) and _categorical_ok(arrow_type.value_type)
    ):
        return CATEGORICAL
    raise DataError(
        f"column '{field.name}' has type {arrow_type}, which the transform cannot encode "
        "(supported: numbers, dates, timestamps, strings, booleans, dictionaries); drop it with data.drop_columns"
    )


def plan_kind(field: pa.Field, override: str | None, *, is_label: bool = False) -> str:
    """The column's type family before the pass; an override its type cannot take is an error here."""
    family = _family(field)
    if is_label and family == IMAGE:
        raise DataError(
            f"column '{field.name}' holds images, so it cannot be data.label_column; set the label to a class column"
        )
    if is_label and override not in (None, "categorical"):
        raise DataError(
            f"column '{field.name}' is data.label_column, so it must be categorical; "
            f"remove its {override} entry from data.column_kinds"
        )
    if override is not None and override not in _ALLOWED[family]:
        raise DataError(
            f"column '{field.name}' has type {field.type}, which cannot be {override}; "
            "remove it from data.column_kinds or drop it with data.drop_columns"
        )
    return family


def check_names(schema: pa.Schema, config: DataConfig) -> None:
    """Every column named in the config exists in the schema (a `drop` entry is already gone)."""
    named = {name: "data.column_kinds" for name, kind in config.column_kinds.items() if kind != "drop"}
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
    """One pass over the batches; each column gets its own generators so batching does not change the sample."""
    children = np.random.SeedSequence(seed).spawn(len(schema))
    profiles = {}
    for field, child in zip(schema, children, strict=True):
        plan = plans[field.name]
        # Numbers collect their distinct values for transforms/discrete.py; categorical types for their slots.
        cap = {TEMPORAL: 0, STRING: 0, IMAGE: 0, CATEGORICAL: config.max_categories}.get(
            plan, max(config.categorical_max_distinct, config.max_categories)
        )
        reservoir = config.fit_sample_rows if plan in (INTEGER, NUMBER, TEMPORAL) else 0
        profile = ColumnProfile(field.name, field.type, cap, reservoir, np.random.default_rng(child))
        profile.values = _value_stats(plan, config.column_kinds.get(field.name), config, child)
        profiles[field.name] = profile
    for batch in batches:
        for field in schema:
            profiles[field.name].update(_column(batch, field))
    return profiles


def _value_stats(
    plan: str, override: str | None, config: DataConfig, seed: np.random.SeedSequence
) -> ValueStats | None:
    """Strings: everything roles.py reads. Integers: uniqueness (ids). Others: counts for a categorical override."""
    counts = max(COUNT_CAP, config.max_categories + 1)
    counted = override in ("categorical", "constant")
    # A child of the column's seed: its own generator leaves the numeric reservoir's draws as they were.
    rng = np.random.default_rng(seed.spawn(1)[0])
    if plan == STRING:
        return ValueStats(counts, HASH_CAP, config.fit_sample_rows, rng, strings=True)
    if plan == INTEGER:
        return ValueStats(counts if counted else 0, HASH_CAP, 0, rng, strings=False)
    return ValueStats(counts, 0, 0, rng, strings=False) if counted else None


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
