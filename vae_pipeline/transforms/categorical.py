"""One-hot encoding of a categorical column over the categories seen in training.

Categories are JSON values (str, int, bool, float; temporal values as their stored integer), sorted by value
for determinism, with null as its own last category when the training data had nulls. Decoding restores the
exact Arrow type, dictionary index type and ordering flag included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, dense_values, storage_type
from vae_pipeline.transforms.base import ColumnTransform, row_argmax
from vae_pipeline.transforms.profile import ColumnProfile

_SHOWN_VALUES = 5


class CategoricalColumn(ColumnTransform):
    """A softmax block with one slot per category.

    Args:
        column: the column's name.
        arrow_type: a string, boolean, integer, floating, temporal or dictionary type.
        max_categories: more distinct values than this is an error (the one-hot block would be too wide).
    """

    kind = "categorical"
    fitted_attributes = ("categories_",)

    def __init__(self, column: str, arrow_type: pa.DataType, *, max_categories: int = 1000) -> None:
        super().__init__(column, arrow_type)
        self.max_categories = max_categories
        self.categories_: list[Any] = []

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
        if profile.overflowed or profile.n_distinct > self.max_categories:
            raise DataError(
                f"column '{self.column}' has more than {self.max_categories} distinct values; set "
                f"data.column_kinds: {{{self.column}: continuous}} if it is numeric, drop it with "
                "data.drop_columns, or raise data.max_categories"
            )
        self.categories_ = sorted(profile.distinct) + ([None] if profile.nulls else [])

    def _transform(self, array: ArrayLike) -> np.ndarray:
        codes = self._codes(array)
        block = np.zeros((len(codes), len(self.categories_)), dtype=np.float32)
        block[np.arange(len(codes)), codes] = 1.0
        return block

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        return self._decode(row_argmax(block))

    def _spans(self, offset: int) -> list[Span]:
        return [Span("softmax", offset, offset + len(self.categories_), self.column)]

    def _value_set(self) -> pa.Array:
        """The non-null categories in the storage type (temporal as integers, dictionaries decoded)."""
        known = self.categories_[:-1] if self.has_null else self.categories_
        return pa.array(known, type=storage_type(self.arrow_type))

    def _codes(self, array: ArrayLike) -> np.ndarray:
        values = dense_values(array)
        found = pc.index_in(values, value_set=self._value_set())
        codes = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        nulls = values.is_null().to_numpy(zero_copy_only=False)
        unknown = (codes < 0) & ~nulls
        if unknown.any():
            shown = pc.unique(values.filter(pa.array(unknown))).to_pylist()[:_SHOWN_VALUES]
            raise DataError(
                f"column '{self.column}' has {int(unknown.sum())} values not seen in training, e.g. {shown}; "
                "refit on data that includes them or filter those rows"
            )
        if nulls.any():
            if not self.has_null:
                raise DataError(
                    f"column '{self.column}' has {int(nulls.sum())} nulls but had none in training; "
                    "refit on data that includes nulls or fill them"
                )
            codes[nulls] = len(self.categories_) - 1
        return codes

    def _decode(self, codes: np.ndarray) -> pa.Array:
        nulls = codes == len(self.categories_) - 1 if self.has_null else np.zeros(len(codes), dtype=bool)
        mask = nulls if nulls.any() else None
        value_type = self.arrow_type.value_type if pa.types.is_dictionary(self.arrow_type) else self.arrow_type
        dictionary = self._value_set().view(value_type)
        if pa.types.is_dictionary(self.arrow_type):
            index_type = self.arrow_type.index_type
            indices = pa.array(np.where(nulls, 0, codes).astype(index_type.to_pandas_dtype()), index_type, mask=mask)
            return pa.DictionaryArray.from_arrays(indices, dictionary, ordered=self.arrow_type.ordered)
        return pc.take(dictionary, pa.array(codes, type=pa.int64(), mask=mask))
