"""Numbers and dates stored as strings: detect the one text format a column is written in, parse it to numbers,
and write numbers back in exactly that format.

A format is found from the column's shapes (its values with digits written as 0, counted over every row by
`ValueStats`) and is accepted only if it writes every example back character for character (the first value of
each shape, the reservoir sample and the exactly counted values): "007" stays "007", "12.50" stays "12.50",
"2020/01/05" stays "2020/01/05". Dates are held as an integer count of the text's resolution: days, minutes,
seconds, or milli- or microseconds.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.errors import DataError
from vae_pipeline.transforms.value_stats import SHAPE_CAP, ValueStats

_SHOWN = 30  # characters of an offending value shown in an error

# Date parts in the order tried where a shape allows several (month first for '/', as in the US; day first
# for '.' and '-', as in Europe); a value that only one of them reads decides.
_DATE_PARTS = {
    "0000-00-00": ["%Y-%m-%d"],
    "0000/00/00": ["%Y/%m/%d"],
    "00/00/0000": ["%m/%d/%Y", "%d/%m/%Y"],
    "00.00.0000": ["%d.%m.%Y", "%m.%d.%Y"],
    "00-00-0000": ["%d-%m-%Y", "%m-%d-%Y"],
}
_TIME = r"00:00(?::00(?:\.000(?:000)?)?)?"
_DATE_SHAPE = re.compile(
    rf"^(?:(?P<date>{'|'.join(re.escape(part) for part in _DATE_PARTS)})(?:(?P<sep>[T ])(?P<time>{_TIME})(?P<zone>Z?))?"
    rf"|(?P<clock>{_TIME}))$"
)
_NUMBER_SHAPE = re.compile(r"^-?(?:0+|0{1,3}(?:,000)+)(?:\.(?P<decimals>0+))?$")
_UNITS = {0: "s", 3: "ms", 6: "us"}
_SECONDS_PER_DAY = 86_400


class MixedFormats(DataError):
    """The values are dates, but not in one format."""


@dataclass(frozen=True)
class DateFormat:
    """A strftime format; `fraction` digits of seconds (0, 3, 6) are written by the unit, not the format."""

    pattern: str
    fraction: int = 0
    clock: bool = False  # a time of day without a date: held as seconds (or finer) since midnight

    @property
    def step(self) -> int:
        """Seconds per held unit: a day for dates, a minute for times without seconds, else 1 (or finer)."""
        if "%H" not in self.pattern:
            return _SECONDS_PER_DAY
        return 1 if "%S" in self.pattern else 60

    @property
    def unit(self) -> str:
        return _UNITS[self.fraction]

    @property
    def numeric_type(self) -> pa.DataType:
        """Held as int64 days, minutes, seconds, or milli- or microseconds: the text's own resolution."""
        return pa.int64()

    def describe(self) -> str:
        return self.pattern + ("." + "f" * self.fraction if self.fraction else "")

    def parse(self, values: pa.Array) -> pa.Array:
        """Strings to int64 counts of the text's resolution, null where a value is not in this format."""
        head, fraction = self._split_fraction(values)
        text = pc.binary_join_element_wise("1970-01-01 ", head, "") if self.clock else head
        pattern = "%Y-%m-%d " + self.pattern if self.clock else self.pattern
        stamps = pc.strptime(text, format=pattern, unit="s", error_is_null=True)
        seconds = stamps.view(pa.int64()) if isinstance(stamps, pa.Array) else pc.cast(stamps, pa.int64())
        if self.step > 1:
            return pc.divide(seconds, self.step)  # exact: the text holds whole days or minutes
        ticks = pc.multiply(seconds, 10**self.fraction)
        return pc.add(ticks, fraction) if fraction is not None else ticks

    def format(self, ticks: np.ndarray, nulls: np.ndarray) -> pa.Array:
        """int64 counts of the text's resolution back to strings in this format."""
        values = ticks * self.step
        mask = nulls if nulls.any() else None
        stamps = pa.array(values.astype(np.int64, copy=False), type=pa.int64(), mask=mask)
        return pc.strftime(stamps.view(pa.timestamp(self.unit)), format=self.pattern)

    def _split_fraction(self, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        if not self.fraction:
            return values, None
        parts = pc.extract_regex(values, rf"^(?P<head>.*:\d\d)\.(?P<fraction>\d{{{self.fraction}}})(?P<tail>Z?)$")
        valid = pc.is_valid(parts)
        head = pc.binary_join_element_wise(parts.field("head"), parts.field("tail"), "")
        head = pc.if_else(valid, head, pa.scalar(None, pa.string()))
        fraction = pc.cast(pc.if_else(valid, parts.field("fraction"), "0"), pa.int64())
        return head, fraction

    def to_json(self) -> dict[str, Any]:
        return {"type": "date", **asdict(self)}


@dataclass(frozen=True)
class NumberFormat:
    """How a column writes its numbers: `decimals` fixed (None: as few as each value needs, up to `most`),
    a thousands separator, zero padding to `width` (0: none)."""

    decimals: int | None
    most: int
    thousands: bool
    width: int

    @property
    def integer(self) -> bool:
        return self.decimals == 0

    @property
    def numeric_type(self) -> pa.DataType:
        return pa.int64() if self.integer else pa.float64()

    def describe(self) -> str:
        parts = ["integers" if self.integer else f"{self.decimals} decimals" if self.decimals else "decimals"]
        parts += ["thousands separator"] * self.thousands + [f"zero-padded to {self.width}"] * bool(self.width)
        return ", ".join(parts)

    def parse(self, values: pa.Array) -> pa.Array:
        plain = pc.replace_substring(values, ",", "") if self.thousands else values
        matched = pc.match_substring_regex(plain, r"^-?\d+(?:\.\d+)?$")
        plain = pc.if_else(matched, plain, pa.scalar(None, pa.string()))
        return pc.cast(plain, self.numeric_type)

    def format(self, numbers: np.ndarray, nulls: np.ndarray) -> pa.Array:
        spec = f"{'0' + str(self.width) if self.width else ''}{',' if self.thousands else ''}"
        if self.integer:
            text = [format(int(value), spec + "d") for value in np.rint(numbers)]
        else:
            decimals = self.most if self.decimals is None else self.decimals
            text = [format(float(value), f"{spec}.{decimals}f") for value in numbers]
            if self.decimals is None:
                text = [value.rstrip("0").rstrip(".") if "." in value else value for value in text]
        return pa.array(text, type=pa.string(), mask=nulls if nulls.any() else None)

    def to_json(self) -> dict[str, Any]:
        return {"type": "number", **asdict(self)}


TextFormat = DateFormat | NumberFormat


def format_from_json(state: dict[str, Any]) -> TextFormat:
    fields = {key: value for key, value in state.items() if key != "type"}
    return DateFormat(**fields) if state["type"] == "date" else NumberFormat(**fields)


def detect_format(stats: ValueStats, column: str, kind: Literal["date", "number"]) -> TextFormat | None:
    """The one date (or number) format every value of the column is written in, or None.

    Raises:
        MixedFormats: every value is a date, but no one format writes them all (e.g. '2020-01-05', '05/01/2020').
    """
    shapes = list(stats.shapes)
    if not shapes or stats.shapes_overflowed or len(shapes) >= SHAPE_CAP:
        return None
    examples = stats.examples() + (list(stats.counts) if stats.counts_complete else [])
    if kind == "number":
        return _number_format(shapes, examples)
    return _date_format(column, stats, examples)


def round_trips(text_format: TextFormat, values: list[str]) -> bool:
    """Whether the format reads every value and writes it back character for character."""
    return bool(readable(text_format, pa.array(values, type=pa.string())).all())


def readable(text_format: TextFormat, values: pa.Array) -> np.ndarray:
    """(N,) bool: which non-null values the format reads and writes back character for character."""
    parsed = text_format.parse(values)
    nulls = parsed.is_null().to_numpy(zero_copy_only=False)
    numbers = pc.fill_null(parsed, 0).to_numpy(zero_copy_only=False)
    written = text_format.format(numbers, nulls)
    same = pc.fill_null(pc.equal(written, pc.cast(values, pa.string())), False)
    return same.to_numpy(zero_copy_only=False) & ~nulls


def _number_format(shapes: list[str], examples: list[str]) -> NumberFormat | None:
    matches = [_NUMBER_SHAPE.match(shape) for shape in shapes]
    if not all(matches):
        return None
    decimals = {len(match["decimals"] or "") for match in matches if match}
    padded = any(re.match(r"^-?0\d", value) for value in examples)
    lengths = {len(shape) for shape in shapes}
    if padded and len(lengths) > 1:
        return None  # zero padding to no single width
    candidate = NumberFormat(
        decimals=min(decimals) if len(decimals) == 1 else None,
        most=max(decimals),
        thousands=any("," in shape for shape in shapes),
        width=lengths.pop() if padded else 0,
    )
    return candidate if round_trips(candidate, examples) else None


def _date_format(column: str, stats: ValueStats, examples: list[str]) -> DateFormat | None:
    """The first candidate (in the first shape's order) that reads every example; mixed formats when every example
    is a date in one of the candidates but no one candidate reads them all; otherwise not dates (None)."""
    per_shape = []
    for shape in stats.shapes:
        match = _DATE_SHAPE.match(shape)
        if match is None:
            return None
        per_shape.append(_candidates(match))
    values = pa.array(examples, type=pa.string())
    candidates = list(dict.fromkeys(c for shape_candidates in per_shape for c in shape_candidates))
    reads = {candidate: readable(candidate, values) for candidate in candidates}
    for candidate in candidates:
        if reads[candidate].all() and all(candidate in shape_candidates for shape_candidates in per_shape):
            return candidate
    if not np.logical_or.reduce(list(reads.values())).all():
        return None  # some value is no date at all ('99/99/2020'): a code that looks like one
    first = max(candidates, key=lambda candidate: int(reads[candidate].sum()))
    second = next(c for c in candidates if (reads[c] & ~reads[first]).any())
    one = examples[int(np.argmax(reads[first]))]
    other = examples[int(np.argmax(reads[second] & ~reads[first]))]
    raise MixedFormats(
        f"column '{column}' mixes date formats: '{one[:_SHOWN]}' ({first.describe()}) and "
        f"'{other[:_SHOWN]}' ({second.describe()}); write it in one format, or set "
        f"data.column_kinds: {{{column}: categorical}} to keep the strings as they are"
    )


def _candidates(match: re.Match[str]) -> list[DateFormat]:
    time = match["time"] or match["clock"]
    clock = ""
    fraction = 0
    if time:
        clock = "%H:%M" + (":%S" if time.count(":") == 2 else "")
        fraction = len(time.split(".")[1]) if "." in time else 0
    if match["clock"]:
        return [DateFormat(clock, fraction, clock=True)]
    suffix = f"{match['sep']}{clock}{match['zone']}" if time else ""
    return [DateFormat(part + suffix, fraction) for part in _DATE_PARTS[match["date"]]]
