"""Identifiers: never modelled, never copied, generated fresh in the training ids' format.

An id column takes no place in the matrix. Decoding writes, for the dataset's row n (`DecodeContext.row_offset`
plus the row's index in the call), an id that is a function of n alone, so ids are unique across all shards of
a dataset however the shards are cut:

- integers: `max + 1 + n`, above every training id;
- numbered strings ("INV-00123"): the same prefix and suffix around `max + 1 + n`, zero-padded to the training
  width where the training ids were;
- other strings ("00M", "a3f9c2"): the most common length, each position drawn from the class of characters
  seen there (a literal, digits, hex, letters...). Row n takes the n-th value of a fixed pseudo-random
  permutation of that space (an affine map modulo its size, seeded at fit), skipping the training ids when
  they are all known; where the space exceeds 2^62 the permutation runs on the last positions and the others
  are drawn at random.
"""

from __future__ import annotations

import logging
import math
import re
import string
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, cast_strings, storage_type
from vae_pipeline.transforms.base import ColumnTransform, DecodeContext
from vae_pipeline.transforms.profile import ColumnProfile
from vae_pipeline.transforms.value_stats import ValueStats

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d{1,18})(?P<suffix>\D*)$")
# The character classes a position may draw from, smallest first; a position takes the first that holds
# every character seen there.
_CLASSES = [
    string.digits,
    string.digits + "abcdef",
    string.digits + "ABCDEF",
    string.ascii_lowercase,
    string.ascii_uppercase,
    string.digits + string.ascii_lowercase,
    string.digits + string.ascii_uppercase,
    string.ascii_letters,
    string.digits + string.ascii_letters,
]
_COUNTER_LIMIT = 2**62  # the counter's modulus stays in int64 arithmetic (see _permuted)
_COUNTER_MIN = 2**40  # positions enough for 10^12 rows when the whole space is too large for int64
_MULTIPLIER = (2**19, 2**20)  # a * n stays below 2^62 for n < 2^42


class IdColumn(ColumnTransform):
    """A zero-width column whose decoded values are fresh ids; see the module docstring for the formats."""

    kind = "id"
    scored_as: ClassVar[str | None] = None
    fitted_attributes = ("format_",)

    def __init__(self, column: str, arrow_type: pa.DataType) -> None:
        super().__init__(column, arrow_type)
        self.format_: dict[str, Any] = {}

    def describe(self) -> str:
        """The generated format in a few words, e.g. "INV-{n:05d} from 5001"."""
        self._check_fitted()
        spec = self.format_
        if spec["kind"] == "integer":
            return f"integers from {spec['start']:,}"
        if spec["kind"] == "numbered":
            digits = f"{{n:0{spec['width']}d}}" if spec["width"] else "{n}"
            return f"{spec['prefix']}{digits}{spec['suffix']} from {spec['start']:,}"
        return f"{len(spec['classes'])} characters in the training pattern"

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        stats = profile.values
        if stats is None:
            raise ValueError(f"id column '{self.column}' was profiled without its value statistics")
        if pa.types.is_integer(storage_type(self.arrow_type)):
            self.format_ = {"kind": "integer", "start": int(stats.maximum if stats.maximum is not None else -1) + 1}
        else:
            examples = stats.examples() + (list(stats.counts) if stats.counts_complete else [])
            self.format_ = _numbered(examples, stats) or _template(examples, stats, profile.non_null, seed)

    def _transform(self, array: ArrayLike) -> np.ndarray:
        return np.zeros((len(array), 0), dtype=np.float32)

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        return self._inverse_with(block, DecodeContext())

    def _inverse_with(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        rows = np.arange(len(block), dtype=np.int64) + context.row_offset
        spec = self.format_
        if spec["kind"] == "integer":
            return self._integers(spec["start"] + rows)
        if spec["kind"] == "numbered":
            text = np.char.mod("%d", spec["start"] + rows)
            if spec["width"]:
                text = np.char.zfill(text, spec["width"])
            text = np.char.add(np.char.add(spec["prefix"], text), spec["suffix"])
        else:
            text = self._templated(rows, context.rng)
        return cast_strings(pa.array(text.tolist(), type=pa.string()), self.arrow_type)

    def _spans(self, offset: int) -> list[Span]:
        return []

    def _integers(self, values: np.ndarray) -> pa.Array:
        target = storage_type(self.arrow_type)
        if len(values) and values[-1] > np.iinfo(target.to_pandas_dtype()).max:
            raise DataError(
                f"column '{self.column}': fresh ids above the training ids run past the largest {target} "
                f"({values[-1]:,}); generate fewer rows or cast the column to a wider integer type"
            )
        array = pa.array(values, type=pa.int64()).cast(target)
        return array.view(self.arrow_type) if target != self.arrow_type else array

    def _templated(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = self.format_
        classes = [np.array(list(chars)) for chars in spec["classes"]]
        counter = spec["counter"]
        index = _permuted(rows, spec, self.column)
        chars = np.empty((len(rows), len(classes)), dtype="<U1")
        for position in range(len(classes) - 1, -1, -1):
            size = len(classes[position])
            if position >= len(classes) - counter:
                digit, index = index % size, index // size
            else:
                digit = rng.integers(0, size, len(rows))
            chars[:, position] = classes[position][digit]
        return np.ascontiguousarray(chars).view(f"<U{len(classes)}").reshape(len(rows))


def _numbered(examples: list[str], stats: ValueStats) -> dict[str, Any] | None:
    """Prefix + the last run of digits + suffix, the same prefix and suffix on every example."""
    matches = [_NUMBERED.match(value) for value in examples]
    if not examples or stats.tail_max is None or not all(matches):
        return None
    frames = {(match["prefix"], match["suffix"]) for match in matches if match}
    if len(frames) != 1:
        return None
    widths = {len(match["digits"]) for match in matches if match}
    prefix, suffix = frames.pop()
    width = widths.pop() if len(widths) == 1 else 0
    return {"kind": "numbered", "prefix": prefix, "suffix": suffix, "width": width, "start": stats.tail_max + 1}


def _template(examples: list[str], stats: ValueStats, rows: int, seed: int) -> dict[str, Any]:
    """Per-position character classes of the most common length, and the seeded permutation of that space."""
    lengths = np.bincount([len(value) for value in examples])
    length = int(np.argmax(lengths))
    same = [value for value in examples if len(value) == length]
    classes = [_position_class({value[i] for value in same}) for i in range(length)]
    sizes = [len(chars) for chars in classes]
    total, counter, modulus = math.prod(sizes), 0, 1
    for size in reversed(sizes):  # the counter takes the last positions; all of them when the space fits int64
        if total >= _COUNTER_LIMIT and (modulus >= _COUNTER_MIN or modulus * size >= _COUNTER_LIMIT):
            break
        counter, modulus = counter + 1, modulus * size
    rng = np.random.default_rng(seed)
    multiplier = int(rng.integers(*_MULTIPLIER))
    while math.gcd(multiplier, modulus) != 1:
        multiplier += 1
    offset = int(rng.integers(0, modulus))
    spec = {"kind": "template", "classes": classes, "counter": counter, "modulus": modulus}
    spec |= {"multiplier": multiplier, "offset": offset, "taken": []}
    if counter == length and stats.counts_complete:
        spec["taken"] = _taken(list(stats.counts), classes, spec)
    elif rows / total > 1e-6:
        logger.warning(
            "id column: fresh ids of %d characters may repeat a training id (%s training ids in %s possible)",
            length, f"{rows:,}", f"{total:,}",
        )  # fmt: skip
    return spec


def _position_class(seen: set[str]) -> str:
    if len(seen) == 1:
        return seen.pop()
    return next((chars for chars in _CLASSES if seen <= set(chars)), "".join(sorted(seen)))


def _taken(values: list[str], classes: list[str], spec: dict[str, Any]) -> list[int]:
    """The permutation positions of the training ids, so fresh ids skip them."""
    modulus, inverse = spec["modulus"], pow(spec["multiplier"], -1, spec["modulus"])
    taken = []
    for value in values:
        if len(value) != len(classes) or any(char not in chars for char, chars in zip(value, classes, strict=True)):
            continue
        index = 0
        for char, chars in zip(value, classes, strict=True):
            index = index * len(chars) + chars.index(char)
        taken.append((index - spec["offset"]) * inverse % modulus)
    return sorted(taken)


def _permuted(rows: np.ndarray, spec: dict[str, Any], column: str) -> np.ndarray:
    """Row n -> the n-th position not taken by a training id -> its place in the permutation (int64)."""
    taken = np.asarray(spec["taken"], dtype=np.int64)
    position = rows.copy()
    while len(taken):
        moved = rows + np.searchsorted(taken, position, side="right")
        if np.array_equal(moved, position):
            break
        position = moved
    modulus = spec["modulus"]
    if len(position) and int(position.max()) >= modulus:
        raise DataError(
            f"column '{column}' has run out of fresh ids in its format ({modulus:,} possible, {len(taken):,} "
            "used in training); generate fewer rows or set data.column_kinds for it to categorical or drop"
        )
    return (spec["multiplier"] * position + spec["offset"]) % modulus


def id_reason(stats: ValueStats, rows: int) -> str:
    """ "unique per row (5,000 of 5,000)", or the share for nearly unique columns."""
    distinct = stats.n_hashed_distinct
    if stats.hash_overflowed:
        return f"unique per row (more than {distinct:,} distinct values, {stats.distinct_share:.1%} of rows)"
    if distinct == stats.hashed:
        return f"unique per row ({distinct:,} of {rows:,})"
    return f"nearly unique per row ({distinct:,} distinct in {rows:,})"


def repeated_value_error(column: str, stats: ValueStats) -> DataError:
    shown = repr(stats.first_repeat)[:40]
    return DataError(
        f"column '{column}' is set to id in data.column_kinds but repeats values (e.g. {shown}); ids must be "
        "unique per row: remove the override or make the column unique"
    )
