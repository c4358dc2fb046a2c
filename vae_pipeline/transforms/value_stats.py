"""Bounded statistics of a string or integer column's values, for inferring its role (id, text, dates as text...).

Gathered in the same single pass as `ColumnProfile`, and like it independent of how the rows were cut into
batches: every structure keeps the *first* values in row order (never "whatever fitted when a batch ended"), and
the reservoir draws one key per value from the column's own generator in row order.

- `counts`: exact counts of the first `count_cap` distinct values (the long tail of a categorical, a text
  column's repeated values); the rest are only counted together in `uncounted`.
- uniqueness: 64-bit hashes of the first `hash_cap` distinct values with their counts, so a column of a million
  unique ids is told from one with repeats (`distinct_share`, `singleton_share`), and the first repeated value.
- strings only: `shapes` (each value with its digits written as 0, e.g. "2020-01-05" -> "0000-00-00") with a
  count and the first example of each, a reservoir sample of the values, and the largest trailing number
  (the fresh range of ids such as "INV-00123").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SHAPE_CAP = 100  # distinct shapes kept; a column with more has no single text format
SHAPE_MAX_LENGTH = 40  # longer values are not dates, numbers or codes: their shape is not computed
_LONG = "<long>"
_TAIL_NUMBER = r"(?:^|\D)(?P<n>\d{1,18})\D*$"  # a value's last run of digits, if it fits an int64


@dataclass
class ValueStats:
    """What one pass learns about a column's values; memory is bounded by the three caps.

    count_cap: distinct values counted exactly.
    hash_cap: distinct values whose hashes are kept to measure uniqueness.
    sample_size: string values kept in the reservoir (0 for integer columns).
    """

    count_cap: int
    hash_cap: int
    sample_size: int
    rng: np.random.Generator
    strings: bool
    counts: dict[Any, int] = field(default_factory=dict)
    uncounted: int = 0
    hashed: int = 0
    hash_overflowed: bool = False
    first_repeat: Any = None
    shapes: dict[str, list[Any]] = field(default_factory=dict)  # shape -> [count, first example]
    shapes_overflowed: bool = False
    tail_max: int | None = None
    maximum: int | None = None  # integer columns: the exact largest value (a float64 would round large ids)
    _hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    _hash_counts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    _keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    _sample: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))

    @property
    def counts_complete(self) -> bool:
        """Whether `counts` holds every non-null value of the column."""
        return self.count_cap > 0 and self.uncounted == 0

    @property
    def n_hashed_distinct(self) -> int:
        return len(self._hashes)

    @property
    def distinct_share(self) -> float:
        """Distinct values per non-null row (1.0: unique); exact up to `hash_cap` distinct values, then estimated
        on the rows holding the first `hash_cap` of them."""
        return len(self._hashes) / self.hashed if self.hashed else 0.0

    @property
    def singleton_share(self) -> float:
        """The share of non-null rows whose value no other row has (estimated as `distinct_share` is)."""
        return float((self._hash_counts == 1).sum()) / self.hashed if self.hashed else 0.0

    def sample(self) -> list[Any]:
        """The reservoir in key order (a deterministic order whatever the batching)."""
        return self._sample[np.argsort(self._keys, kind="stable")].tolist()

    def examples(self) -> list[Any]:
        """The first value of each shape, then the reservoir: the values a text format is checked on."""
        return [example for _, example in self.shapes.values()] + self.sample()

    def update(self, values: pa.Array) -> None:
        """Add one batch: dense values (dictionaries decoded) with nulls."""
        values = values.drop_null()
        if not len(values):
            return
        if self.count_cap:
            self._count(values)
        if self.hash_cap:
            self._hash(values)
        if pa.types.is_integer(values.type):
            largest = pc.max(values).as_py()
            self.maximum = largest if self.maximum is None else max(self.maximum, largest)
        if self.strings:
            if not self.shapes_overflowed:
                self._shape(values)
            self._tail(values)
            self._reservoir(values)

    def _count(self, values: pa.Array) -> None:
        counted = pc.value_counts(values)  # in order of first appearance
        for value, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            if value in self.counts:
                self.counts[value] += count
            elif len(self.counts) < self.count_cap:
                self.counts[value] = count
            else:
                self.uncounted += count

    def _hash(self, values: pa.Array) -> None:
        hashes = pd.util.hash_array(values.to_numpy(zero_copy_only=False))  # siphash, fixed key: deterministic
        unique, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        position = np.searchsorted(self._hashes, unique)
        found = position < len(self._hashes)
        found[found] = self._hashes[position[found]] == unique[found]
        np.add.at(self._hash_counts, position[found], counts[found])
        new = np.flatnonzero(~found)
        room = self.hash_cap - len(self._hashes)
        if len(new) > room:
            self.hash_overflowed = True
            new = new[np.argsort(first[new], kind="stable")[:room]]  # the first new values in row order
        tracked = np.concatenate([self._hashes, unique[new]])
        order = np.argsort(tracked, kind="stable")
        self._hashes = tracked[order]
        self._hash_counts = np.concatenate([self._hash_counts, counts[new]])[order]
        self.hashed += int(counts[found].sum() + counts[new].sum())
        if self.first_repeat is None:
            self._find_repeat(values, hashes, first[new])

    def _find_repeat(self, values: pa.Array, hashes: np.ndarray, first_new: np.ndarray) -> None:
        """The earliest row whose (tracked) value an earlier row already had."""
        repeat = np.isin(hashes, self._hashes)
        repeat[first_new] = False  # a newly tracked value's first row in the whole column
        rows = np.flatnonzero(repeat)
        if len(rows):
            self.first_repeat = values[int(rows[0])].as_py()

    def _shape(self, values: pa.Array) -> None:
        long = pc.greater(pc.utf8_length(values), SHAPE_MAX_LENGTH)
        digits = pc.replace_substring_regex(values, pattern=r"\d", replacement="0")
        shapes = pc.if_else(long, pa.scalar(_LONG, values.type), digits)
        counted = pc.value_counts(shapes)
        for shape, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            if shape in self.shapes:
                self.shapes[shape][0] += count
            elif len(self.shapes) < SHAPE_CAP:
                example = values[pc.index(shapes, shape).as_py()].as_py()
                self.shapes[shape] = [count, example]
            else:
                self.shapes_overflowed = True
                return

    def _tail(self, values: pa.Array) -> None:
        numbered = values.filter(pc.match_substring_regex(values, _TAIL_NUMBER))
        if not len(numbered):
            return
        tails = pc.extract_regex(numbered, _TAIL_NUMBER).field("n")
        largest = pc.max(pc.cast(tails, pa.int64())).as_py()
        if largest is not None:
            self.tail_max = largest if self.tail_max is None else max(self.tail_max, largest)

    def _reservoir(self, values: pa.Array) -> None:
        keys = self.rng.random(len(values))  # drawn for every value so the key stream ignores batch bounds
        chosen = np.arange(len(values))
        if len(self._keys) >= self.sample_size:
            chosen = np.flatnonzero(keys < self._keys.max())
        all_keys = np.concatenate([self._keys, keys[chosen]])
        all_values = np.concatenate([self._sample, np.asarray(values.take(chosen).to_pylist(), dtype=object)])
        if len(all_keys) > self.sample_size:
            kept = np.argpartition(all_keys, self.sample_size - 1)[: self.sample_size]
            all_keys, all_values = all_keys[kept], all_values[kept]
        self._keys, self._sample = all_keys, all_values
