"""Bounded streaming statistics of one column, gathered in a single pass over record batches.

A profile keeps null counts, min/max, a capped set of distinct values and a seeded reservoir sample of the
non-null numeric values. The reservoir uses random keys (keep the `size` smallest of one uniform key per
value): each column draws its keys from its own generator in row order, so the sample does not depend on how
the rows were cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import is_image_type, pixel_range
from vae_pipeline.transforms.arrow_types import ArrayLike, dense_values, numeric_values
from vae_pipeline.transforms.value_stats import ValueStats


@dataclass
class ColumnProfile:
    """What one pass learns about a column; memory is bounded by `distinct_cap` and `reservoir_size`.

    distinct_cap: stop collecting distinct values after this many (0: do not collect them).
    reservoir_size: non-null numeric values kept for fitting (0: the column is not numeric).
    """

    name: str
    arrow_type: pa.DataType
    distinct_cap: int
    reservoir_size: int
    rng: np.random.Generator
    rows: int = 0
    nulls: int = 0
    minimum: float = np.inf
    maximum: float = -np.inf
    distinct: set[Any] = field(default_factory=set)
    overflowed: bool = False
    values: ValueStats | None = None  # string and integer columns: counts, uniqueness, text shapes (roles.py)
    _keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    _values: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def non_null(self) -> int:
        return self.rows - self.nulls

    @property
    def n_distinct(self) -> int:
        """Distinct non-null values; once over the cap, only known to be more than `distinct_cap`."""
        return len(self.distinct)

    def update(self, array: ArrayLike) -> None:
        """Add one batch of this column."""
        self.rows += len(array)
        self.nulls += array.null_count
        if is_image_type(self.arrow_type):
            low, high = pixel_range(array, self.name)
            self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)
            return  # pixels have no distinct values or reservoir worth keeping
        if pa.types.is_floating(self.arrow_type):
            self._check_finite(array)
        if self.distinct_cap and not self.overflowed:
            self._add_distinct(array)
        if self.values is not None:
            self.values.update(dense_values(array))
        if self.reservoir_size:
            values, nulls = numeric_values(array)
            self._add_numeric(values[~nulls])

    def sample(self) -> np.ndarray:
        """The reservoir in key order (a deterministic order whatever the batching)."""
        return self._values[np.argsort(self._keys, kind="stable")]

    def _check_finite(self, array: ArrayLike) -> None:
        bad = pc.sum(pc.invert(pc.is_finite(array))).as_py() or 0
        if bad:
            raise DataError(
                f"column '{self.name}' has {bad} NaN or infinite values; replace them with nulls (missing values) "
                "or drop the column with data.drop_columns"
            )

    def _add_distinct(self, array: ArrayLike) -> None:
        unique = pc.unique(dense_values(array).drop_null())
        self.distinct.update(unique.to_pylist())
        if len(self.distinct) > self.distinct_cap:
            self.overflowed = True
            self.distinct = set(sorted(self.distinct, key=repr)[: self.distinct_cap + 1])

    def _add_numeric(self, values: np.ndarray) -> None:
        if not len(values):
            return
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        keys = self.rng.random(len(values))  # drawn for every value so the key stream ignores batch bounds
        if len(self._keys) >= self.reservoir_size:
            keep = keys < self._keys.max()
            keys, values = keys[keep], values[keep]
        all_keys = np.concatenate([self._keys, keys])
        all_values = np.concatenate([self._values, values])
        if len(all_keys) > self.reservoir_size:
            chosen = np.argpartition(all_keys, self.reservoir_size - 1)[: self.reservoir_size]
            all_keys, all_values = all_keys[chosen], all_values[chosen]
        self._keys, self._values = all_keys, all_values
