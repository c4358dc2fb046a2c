"""One-hot encoding of a categorical column over the categories seen in training, with a long tail.

Categories are JSON values (str, int, bool, float; temporal values as their stored integer), sorted by value
for determinism, with null as its own last category when the training data had nulls. Decoding restores the
exact Arrow type, dictionary index type and ordering flag included.

A column with more than `max_categories` values keeps its `max_categories - 1` most frequent ones as categories
and shares one last "rare" slot among the others: decoding that slot draws one of them with its training frequency
(from the decode context's seeded generator), so a code list with 5,000 values needs no 5,000-wide block.
`TextColumn` models only the values of free text that repeat often enough, and writes the others as null.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, dense_values, storage_type
from vae_pipeline.transforms.base import ColumnTransform, DecodeContext, row_argmax
from vae_pipeline.transforms.profile import ColumnProfile

logger = logging.getLogger(__name__)

_SHOWN_VALUES = 5


class CategoricalColumn(ColumnTransform):
    """A softmax block with one slot per category, and a last slot for the rare values when there are any.

    Args:
        column: the column's name.
        arrow_type: a string, boolean, integer, floating, temporal or dictionary type.
        max_categories: slots for values; with more distinct values, the rarest share the last one.
        allow_rare: False for a label column, whose every class must have its own slot (then more values than
            `max_categories` is an error).
    """

    kind = "categorical"
    scored_as: ClassVar[str | None] = "categorical"
    fitted_attributes = ("categories_", "rare_values_", "rare_counts_")

    def __init__(
        self, column: str, arrow_type: pa.DataType, *, max_categories: int = 1000, allow_rare: bool = True
    ) -> None:
        super().__init__(column, arrow_type)
        self.max_categories = max_categories
        self.allow_rare = allow_rare
        self.categories_: list[Any] = []
        self.rare_values_: list[Any] = []
        self.rare_counts_: list[int] = []

    @property
    def has_rare(self) -> bool:
        """Whether the block ends with the slot of the rare values."""
        return bool(self.rare_values_)

    @property
    def has_null(self) -> bool:
        """Whether null is a category (always the last one)."""
        return bool(self.categories_) and self.categories_[-1] is None

    def codes(self, array: ArrayLike) -> np.ndarray:
        """(B,) int64 index of each value into `categories_`."""
        self._check_fitted()
        if array.type != self.arrow_type:
            raise DataError(f"column '{self.column}' has type {array.type}, fitted on {self.arrow_type}")
        return self._codes(array)

    def decode(self, codes: np.ndarray) -> pa.Array:
        """Category codes (B,) back to an Arrow array of the fitted type."""
        self._check_fitted()
        codes = np.asarray(codes)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(
                f"column '{self.column}': codes must be a 1-d integer array, got {codes.dtype} {codes.shape}"
            )
        if len(codes) and (codes.min() < 0 or codes.max() >= len(self.categories_)):
            raise DataError(
                f"column '{self.column}': codes must lie in [0, {len(self.categories_)}), "
                f"got values in [{codes.min()}, {codes.max()}]"
            )
        return self._decode(codes.astype(np.int64, copy=False))

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        counts = profile.values.counts if profile.values is not None and profile.values.counts else None
        if counts is None:
            if profile.overflowed or profile.n_distinct > self.max_categories:
                raise DataError(
                    f"column '{self.column}' has more than {self.max_categories} distinct values; set "
                    f"data.column_kinds: {{{self.column}: continuous}} if it is numeric, drop it with "
                    "data.drop_columns, or raise data.max_categories"
                )
            frequent = sorted(profile.distinct)
        elif len(counts) <= self.max_categories:
            frequent = sorted(counts)
        elif not self.allow_rare:
            raise DataError(
                f"column '{self.column}' has more than {self.max_categories} distinct values, and as the label "
                "each needs its own class; raise data.max_categories or pick another data.label_column"
            )
        else:
            ranked = sorted(counts, key=lambda value: (-counts[value], value))
            frequent = sorted(ranked[: self.max_categories - 1])
            self.rare_values_ = sorted(ranked[self.max_categories - 1 :])
            self.rare_counts_ = [counts[value] for value in self.rare_values_]
        self.categories_ = [_json_safe(v) for v in frequent] + ([None] if profile.nulls else [])
        self.rare_values_ = [_json_safe(v) for v in self.rare_values_]

    def _transform(self, array: ArrayLike) -> np.ndarray:
        codes = self._codes(array)
        block = np.zeros((len(codes), self.output_width), dtype=np.float32)
        block[np.arange(len(codes)), codes] = 1.0
        return block

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        return self._decode(row_argmax(block))

    def _inverse_with(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        return self._decode(row_argmax(block), context.rng)

    def _spans(self, offset: int) -> list[Span]:
        return [Span("softmax", offset, offset + len(self.categories_) + self.has_rare, self.column)]

    def _value_set(self) -> pa.Array:
        """The non-null categories in the storage type (temporal as integers, dictionaries decoded)."""
        known = self.categories_[:-1] if self.has_null else self.categories_
        return category_array(known, self.arrow_type)

    def _codes(self, array: ArrayLike) -> np.ndarray:
        values = dense_values(array)
        found = pc.index_in(values, value_set=self._value_set())
        codes = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        nulls = values.is_null().to_numpy(zero_copy_only=False)
        unknown = (codes < 0) & ~nulls
        if unknown.any():
            self._unknown(values, codes, unknown)
        if nulls.any():
            if not self.has_null:
                raise DataError(
                    f"column '{self.column}' has {int(nulls.sum())} nulls but had none in training; "
                    "refit on data that includes nulls or fill them"
                )
            codes[nulls] = len(self.categories_) - 1
        return codes

    def _unknown(self, values: pa.Array, codes: np.ndarray, unknown: np.ndarray) -> None:
        """Values without a slot of their own belong to the rare slot; without one they are an error."""
        if self.has_rare:
            codes[unknown] = len(self.categories_)
            return
        shown = pc.unique(values.filter(pa.array(unknown))).to_pylist()[:_SHOWN_VALUES]
        raise DataError(
            f"column '{self.column}' has {int(unknown.sum())} values not seen in training, e.g. {shown}; "
            "refit on data that includes them or filter those rows"
        )

    def _decode(self, codes: np.ndarray, rng: np.random.Generator | None = None) -> pa.Array:
        n_known = len(self.categories_) - self.has_null
        nulls = codes == n_known if self.has_null else np.zeros(len(codes), dtype=bool)
        mask = nulls if nulls.any() else None
        value_type = self.arrow_type.value_type if pa.types.is_dictionary(self.arrow_type) else self.arrow_type
        dictionary = self._value_set()
        if self.has_rare:
            # The rare slot draws one of the rare values by its training frequency, after all known values.
            rare = codes == len(self.categories_)
            weights = np.asarray(self.rare_counts_, dtype=np.float64)
            drawn = (rng or np.random.default_rng(0)).choice(
                len(weights), size=int(rare.sum()), p=weights / weights.sum()
            )
            codes = codes.copy()
            codes[rare] = n_known + drawn
            rare_values = category_array(self.rare_values_, self.arrow_type)
            dictionary = pa.concat_arrays([dictionary, rare_values])
        dictionary = dictionary.view(value_type)
        if pa.types.is_dictionary(self.arrow_type):
            index_type = self.arrow_type.index_type
            indices = pa.array(np.where(nulls, 0, codes).astype(index_type.to_pandas_dtype()), index_type, mask=mask)
            return pa.DictionaryArray.from_arrays(indices, dictionary, ordered=self.arrow_type.ordered)
        return pc.take(dictionary, pa.array(codes, type=pa.int64(), mask=mask))


class TextColumn(CategoricalColumn):
    """Free text: the values seen at least `min_count` times are categories, the others are written as null.

    Modelling a value that few rows share cannot replay one row's remark; the share written as null is logged as
    a warning. Null is always the last category (it holds the nulled values); with no value repeated often enough
    the column takes no place in the matrix and decodes to nulls.
    """

    kind = "text"
    scored_as: ClassVar[str | None] = None

    def __init__(self, column: str, arrow_type: pa.DataType, *, min_count: int = 5) -> None:
        super().__init__(column, arrow_type, max_categories=2**31, allow_rare=False)
        self.min_count = min_count

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        if profile.values is None:
            raise ValueError(f"text column '{self.column}' was profiled without its value counts")
        counts = profile.values.counts
        kept = sorted(value for value, count in counts.items() if count >= self.min_count)
        self.categories_ = [*kept, None]
        nulled = profile.non_null - sum(counts[value] for value in kept)
        if nulled:
            logger.warning(
                "column '%s' is free text: %s of %s values (%.1f%%) are seen fewer than %d times and are written "
                "as null; set data.column_kinds: {%s: drop} to leave the column out",
                self.column, f"{nulled:,}", f"{profile.non_null:,}", 100 * nulled / profile.non_null,
                self.min_count, self.column,
            )  # fmt: skip

    def _transform(self, array: ArrayLike) -> np.ndarray:
        if len(self.categories_) == 1:
            return np.zeros((len(array), 0), dtype=np.float32)
        return super()._transform(array)

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        if len(self.categories_) == 1:
            return self._decode(np.zeros(len(block), dtype=np.int64))
        return super()._inverse_transform(block)

    def _inverse_with(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        return self._inverse_transform(block)

    def _spans(self, offset: int) -> list[Span]:
        return super()._spans(offset) if len(self.categories_) > 1 else []

    def _unknown(self, values: pa.Array, codes: np.ndarray, unknown: np.ndarray) -> None:
        codes[unknown] = len(self.categories_) - 1  # a value seen too rarely is written as null


def _json_safe(value: Any) -> Any:
    """A category as a JSON value: decimals as their exact text (JSON numbers would round them through floats)."""
    return str(value) if isinstance(value, Decimal) else value


def category_array(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """Categories (JSON values) as an Arrow array of the column's storage type; decimal text is cast back exactly."""
    target = storage_type(arrow_type)
    if pa.types.is_decimal(target):
        return pc.cast(pa.array(values, type=pa.string()), target)
    return pa.array(values, type=target)
