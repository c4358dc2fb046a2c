"""A column with one value: passed through, taking no place in the matrix."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, storage_type
from vae_pipeline.transforms.base import ColumnTransform
from vae_pipeline.transforms.profile import ColumnProfile


class ConstantColumn(ColumnTransform):
    """Every decoded row holds the one value seen in training (a JSON value; a decimal as its text)."""

    kind = "constant"
    scored_as: ClassVar[str | None] = None
    fitted_attributes = ("value_",)

    def __init__(self, column: str, arrow_type: pa.DataType) -> None:
        super().__init__(column, arrow_type)
        self.value_: Any = None

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        values = list(profile.values.counts) if profile.values is not None and profile.values.counts else None
        if values is None:
            values = [] if profile.overflowed else list(profile.distinct)
        if len(values) != 1:
            raise DataError(
                f"column '{self.column}' is set to constant in data.column_kinds but has "
                f"{'more than one value' if len(values) > 1 else 'no collected value'}; remove the override"
            )
        value = values[0]
        self.value_ = (
            str(value) if isinstance(value, Decimal) else value.item() if isinstance(value, np.generic) else value
        )

    def _transform(self, array: ArrayLike) -> np.ndarray:
        return np.zeros((len(array), 0), dtype=np.float32)

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        target = storage_type(self.arrow_type)
        value = Decimal(self.value_) if pa.types.is_decimal(target) else self.value_
        array = pa.array([value] * len(block), type=target)
        if pa.types.is_dictionary(self.arrow_type):
            return array.dictionary_encode().cast(self.arrow_type)
        return array.view(self.arrow_type) if target != self.arrow_type else array

    def _spans(self, offset: int) -> list[Span]:
        return []
