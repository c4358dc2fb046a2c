"""Numbers and dates stored as strings, modelled as numbers and written back in their exact text format.

The column's text format (text_formats.py) parses each value to a number (a date to its days, seconds or
finer ticks); an inner continuous or discrete transform models those numbers; decoding formats the inner
transform's numbers back into text, in the column's own Arrow string type.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, cast_strings, dense_values, numeric_values
from vae_pipeline.transforms.base import ColumnTransform, DecodeContext
from vae_pipeline.transforms.continuous import ContinuousColumn
from vae_pipeline.transforms.discrete import DiscreteColumn
from vae_pipeline.transforms.profile import ColumnProfile
from vae_pipeline.transforms.text_formats import TextFormat, format_from_json

INNER_TRANSFORMS: dict[str, type[ContinuousColumn]] = {"continuous": ContinuousColumn, "discrete": DiscreteColumn}
_SHOWN_VALUES = 3


class ParsedTextColumn(ColumnTransform):
    """Strings in one number or date format, modelled by an inner numeric transform.

    Args:
        column: the column's name.
        arrow_type: a string type, or a dictionary of one.
        text_format: the detected format (`text_formats.detect_format`); None only before `load_state_dict`.
        inner: "continuous" or "discrete".
        max_modes: mixture components of the inner transform.
        distinct_cap: distinct numbers collected for the inner profile (as for a numeric column).
    """

    kind = "parsed_text"
    scored_as: ClassVar[str | None] = "continuous"
    fitted_attributes = ("format_", "inner_")

    def __init__(
        self,
        column: str,
        arrow_type: pa.DataType,
        *,
        text_format: TextFormat | None = None,
        inner: str = "continuous",
        max_modes: int = 10,
        distinct_cap: int = 1000,
    ) -> None:
        super().__init__(column, arrow_type)
        self.text_format = text_format
        self.max_modes = max_modes
        self.distinct_cap = distinct_cap
        self.format_: dict[str, Any] = text_format.to_json() if text_format else {}
        self.inner_: dict[str, Any] = {"kind": inner}
        self._inner: ContinuousColumn | None = None

    @property
    def inner(self) -> ContinuousColumn:
        """The fitted numeric transform of the parsed values."""
        self._check_fitted()
        assert self._inner is not None
        return self._inner

    def load_state_dict(self, state: dict[str, Any]) -> ParsedTextColumn:
        super().load_state_dict(state)
        self.text_format = format_from_json(self.format_)
        inner = INNER_TRANSFORMS[self.inner_["kind"]].from_state_dict(self.inner_)
        assert isinstance(inner, ContinuousColumn)
        self._inner = inner
        return self

    def scoring_values(self, array: ArrayLike) -> ArrayLike:
        return self._parse(array)

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        assert self.text_format is not None, "a ParsedTextColumn is fitted with its text_format"
        numbers = parsed_profile(profile, self.text_format, self.distinct_cap)
        inner_type = INNER_TRANSFORMS[self.inner_["kind"]]
        inner = inner_type(self.column, numbers.arrow_type, max_modes=self.max_modes)
        inner.fit(numbers, seed=seed)
        self._inner, self.inner_ = inner, inner.state_dict()

    def _transform(self, array: ArrayLike) -> np.ndarray:
        return self.inner.transform(self._parse(array))

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        return self._inverse_with(block, DecodeContext())

    def _inverse_with(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        assert self.text_format is not None
        numbers, nulls = numeric_values(self.inner.inverse_transform(block, context))
        return cast_strings(self.text_format.format(numbers, nulls), self.arrow_type)

    def _spans(self, offset: int) -> list[Span]:
        return self.inner.spans(offset)

    def _parse(self, array: ArrayLike) -> pa.Array:
        assert self.text_format is not None
        values = pc.cast(dense_values(array), pa.string())
        parsed = self.text_format.parse(values)
        failed = pc.and_(pc.is_null(parsed), pc.is_valid(values))
        if pc.any(failed).as_py():
            shown = values.filter(failed).to_pylist()[:_SHOWN_VALUES]
            raise DataError(
                f"column '{self.column}' was fitted as text in the format {self.text_format.describe()}, but holds "
                f"{shown}; fix those values, or set data.column_kinds: {{{self.column}: categorical}}"
            )
        return parsed


def parsed_profile(profile: ColumnProfile, text_format: TextFormat, distinct_cap: int) -> ColumnProfile:
    """A numeric profile of the parsed values: the parsed reservoir, and the exact distinct set and range when
    every value was counted (else the range of the sample and an overflowed distinct set)."""
    stats = profile.values
    assert stats is not None, f"column '{profile.name}' was profiled without its value statistics"
    numeric_type = text_format.numeric_type
    sample = text_format.parse(pa.array(stats.sample(), type=pa.string())).drop_null()
    numbers = ColumnProfile(profile.name, numeric_type, distinct_cap, max(len(sample), 1), np.random.default_rng(0))
    numbers.update(sample.cast(numeric_type))
    numbers.rows, numbers.nulls = profile.rows, profile.nulls
    if stats.counts_complete:
        counted = text_format.parse(pa.array(list(stats.counts), type=pa.string())).drop_null().cast(numeric_type)
        distinct = set(pc.unique(counted).to_pylist())
        numbers.minimum, numbers.maximum = float(pc.min(counted).as_py()), float(pc.max(counted).as_py())
        numbers.overflowed = len(distinct) > distinct_cap
        numbers.distinct = set(sorted(distinct)[: distinct_cap + 1]) if numbers.overflowed else distinct
    else:
        numbers.overflowed = True
    return numbers
