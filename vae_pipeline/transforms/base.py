"""The column-transform seam (after RDT's `rdt/transformers/base.py`).

The public `fit`/`transform`/`inverse_transform` here check their inputs and outputs and keep the books; a
subclass writes only `_fit`, `_transform`, `_inverse_transform` and `_spans`. Fitted attributes end in `_`, are
plain JSON values, and are listed in `fitted_attributes` so `state_dict`/`load_state_dict` need no per-class code.

A column may take no place in the matrix (an id generated fresh, a constant): its `spans` are empty, its block is
(B, 0), and it decodes from the `DecodeContext` alone (where the rows sit in the dataset, a seeded generator).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError, NotFittedError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, type_from_json, type_to_json
from vae_pipeline.transforms.profile import ColumnProfile


@dataclass(frozen=True)
class DecodeContext:
    """What decoding needs besides the matrix.

    row_offset: the global index of the first decoded row in its dataset (the rows of earlier shards): ids are
        made from it, so they are unique across every shard of a dataset.
    rng: draws the values decoding picks at random (a rare category's member); seeded by the caller.
    """

    row_offset: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


class ColumnTransform(ABC):
    """A reversible map from one Arrow column to a block of float32 columns.

    Args:
        column: the column's name, used in every error message.
        arrow_type: the column's Arrow type; `inverse_transform` returns exactly this type.
    """

    kind: ClassVar[str]
    fitted_attributes: ClassVar[tuple[str, ...]]
    # How evaluation scores the column: "continuous", "categorical", or None (not scored: an id, free text, a
    # constant). A column whose values are text for numbers is scored on `scoring_values`.
    scored_as: ClassVar[str | None] = None

    def __init__(self, column: str, arrow_type: pa.DataType) -> None:
        self.column = column
        self.arrow_type = arrow_type
        self._fitted = False

    def fit(self, profile: ColumnProfile, *, seed: int = 0) -> ColumnTransform:
        """Learn the parameters from a column's streaming profile. Returns self."""
        if profile.name != self.column:
            raise ValueError(f"profile of column '{profile.name}' given to the transform of '{self.column}'")
        if profile.non_null == 0:
            raise DataError(
                f"column '{self.column}' has only nulls ({profile.rows} rows); drop it with data.drop_columns"
            )
        self._fit(profile, seed)
        self._fitted = True
        return self

    def transform(self, array: ArrayLike) -> np.ndarray:
        """Encode a column as a (B, output_width) float32 block."""
        self._check_fitted()
        if array.type != self.arrow_type:
            raise DataError(
                f"column '{self.column}' has type {array.type} but the transform was fitted on {self.arrow_type}; "
                "cast it or refit"
            )
        block = self._transform(array)
        assert block.shape == (len(array), self.output_width), block.shape
        return block.astype(np.float32, copy=False)

    def inverse_transform(self, block: np.ndarray, context: DecodeContext | None = None) -> pa.Array:
        """Decode a (B, output_width) block back to an Arrow array of the fitted type."""
        self._check_fitted()
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.output_width:
            raise ValueError(f"column '{self.column}' expects a (B, {self.output_width}) block, got {block.shape}")
        array = self._inverse_with(block, context or DecodeContext())
        assert array.type == self.arrow_type, (array.type, self.arrow_type)
        return array

    def scoring_values(self, array: ArrayLike) -> ArrayLike:
        """The column as evaluation scores it: itself, or for numbers and dates written as text, their values."""
        return array

    @property
    def output_width(self) -> int:
        """Number of float columns this transform produces."""
        self._check_fitted()
        return sum(span.width for span in self._spans(0))

    def spans(self, offset: int) -> list[Span]:
        """The layout of this column's block when it starts at `offset` of the whole vector."""
        self._check_fitted()
        return self._spans(offset)

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; `from_state_dict` rebuilds an identical transform."""
        self._check_fitted()
        fitted = {name: getattr(self, name) for name in self.fitted_attributes}
        return {"kind": self.kind, "column": self.column, "arrow_type": type_to_json(self.arrow_type), **fitted}

    def load_state_dict(self, state: dict[str, Any]) -> ColumnTransform:
        """Restore the fitted attributes written by `state_dict`. Returns self."""
        if state.get("kind") != self.kind:
            raise ValueError(f"state of a '{state.get('kind')}' transform given to a '{self.kind}' transform")
        missing = [name for name in self.fitted_attributes if name not in state]
        if missing:
            raise ValueError(f"state of column '{self.column}' lacks {missing}; it was not written by state_dict")
        for name in self.fitted_attributes:
            setattr(self, name, state[name])
        self._fitted = True
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ColumnTransform:
        return cls(state["column"], type_from_json(state["arrow_type"])).load_state_dict(state)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(
                f"the {self.kind} transform of column '{self.column}' is not fitted; call fit first "
                "(or load_state_dict)"
            )

    @abstractmethod
    def _fit(self, profile: ColumnProfile, seed: int) -> None: ...

    @abstractmethod
    def _transform(self, array: ArrayLike) -> np.ndarray: ...

    @abstractmethod
    def _inverse_transform(self, block: np.ndarray) -> pa.Array: ...

    def _inverse_with(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        """Decoding that needs the context (ids, random draws) overrides this; the others ignore it."""
        return self._inverse_transform(block)

    @abstractmethod
    def _spans(self, offset: int) -> list[Span]: ...


def row_argmax(block: np.ndarray) -> np.ndarray:
    """(B, w) -> (B,) int64 index of each row's largest entry, the first on ties; NaN never wins.

    Branch-free passes over whole columns: the blocks are narrow and generation hands them over column-major,
    where `np.argmax(block, axis=1)` first copies the block into row order and then loops over tiny rows (about
    10x slower); masked assignments (`putmask`, `where`) mispredict on random draws and are as slow.
    """
    if block.flags.c_contiguous and block.shape[1] > 1:
        # Row-major (a caller's own matrix): numpy's argmax reads it in order; NaN made -inf so it never wins.
        nan = np.isnan(block)
        return np.argmax(np.where(nan, -np.inf, block) if nan.any() else block, axis=1).astype(np.int64)
    width = block.shape[1]
    best = block[:, 0].copy()
    for k in range(1, width):
        np.fmax(best, block[:, k], out=best)
    dtype = np.uint8 if width <= 256 else np.int64  # narrow integers keep the passes cheap
    index = np.zeros(len(block), dtype=dtype)
    found = block[:, 0] == best
    for k in range(1, width):
        hit = block[:, k] == best
        hit &= ~found
        found |= hit
        np.add(index, hit.view(np.uint8).astype(dtype, copy=False) * dtype(k), out=index)
    return index.astype(np.int64)
