"""The whole-table transform: Arrow rows <-> the float32 matrix the VAE reads and writes.

`TableTransform.fit` reads the record batches once (the table is never held in memory), infers each column's
kind, and fits one column transform per column. The matrix layout is described by `spans`; decoding returns a
table with the original column names, order and Arrow types.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import ConfigError, DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import schema_from_json, schema_to_json
from vae_pipeline.transforms.base import ColumnTransform
from vae_pipeline.transforms.categorical import CategoricalColumn
from vae_pipeline.transforms.continuous import ContinuousColumn
from vae_pipeline.transforms.inference import check_names, plan_kind, profile_columns, resolve_kind

logger = logging.getLogger(__name__)

STATE_VERSION = 1

COLUMN_TRANSFORMS: dict[str, type[ColumnTransform]] = {"continuous": ContinuousColumn, "categorical": CategoricalColumn}

_BUILDERS: dict[str, Callable[[pa.Field, DataConfig], ColumnTransform]] = {
    "continuous": lambda field, config: ContinuousColumn(field.name, field.type, max_modes=config.max_modes),
    "categorical": lambda field, config: CategoricalColumn(
        field.name, field.type, max_categories=config.max_categories
    ),
}


class TableTransform:
    """A fitted, reversible map between Arrow tables and (B, output_dim) float32 matrices.

    Attributes:
        schema: the input schema (after `data.drop_columns`); `inverse_transform` returns exactly this schema.
        spans: the layout of the matrix, in order, covering [0, output_dim).
        output_dim: the matrix width.
        label_column: the label column, or None.
        label_classes: the label's categories as JSON values (None for null); [] without a label.
        conditional: when True the label is not in the matrix; `inverse_transform` takes it as `labels` codes.
    """

    def __init__(
        self,
        schema: pa.Schema,
        columns: dict[str, ColumnTransform],
        label_column: str | None = None,
        conditional: bool = False,
    ) -> None:
        if conditional and label_column is None:
            raise ConfigError("a conditional transform needs data.label_column; set it or conditional: false")
        self.schema = schema
        self.columns = columns
        self.label_column = label_column
        self.conditional = conditional
        self.spans: list[Span] = []
        self._slices: dict[str, tuple[int, int]] = {}
        for name in self.matrix_columns:
            start = self.spans[-1].end if self.spans else 0
            self.spans.extend(columns[name].spans(start))
            self._slices[name] = (start, self.spans[-1].end)
        self.output_dim = self.spans[-1].end if self.spans else 0

    @classmethod
    def fit(
        cls,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        config: DataConfig,
        *,
        conditional: bool = False,
        seed: int = 0,
    ) -> TableTransform:
        """Fit on one streaming pass over `batches`.

        Args:
            batches: record batches with (at least) the columns of `schema`, read once.
            schema: the input schema after `config.drop_columns` were removed.
            config: column kinds, the label column and the limits on categories and modes.
            conditional: keep the label column out of the matrix (a conditional VAE's condition).
            seed: seeds the reservoir samples and the mixtures.

        Raises:
            DataError: an unsupported or all-null column, too many categories, or a config name not in `schema`.
        """
        if conditional and not config.label_column:
            raise ConfigError("conditional=True needs data.label_column; set the label column or conditional: false")
        if not len(schema):
            raise DataError("the input schema has no columns left after data.drop_columns")
        check_names(schema, config)
        plans = {
            field.name: plan_kind(
                field, config.column_kinds.get(field.name), is_label=field.name == config.label_column
            )
            for field in schema
        }
        profiles = profile_columns(batches, schema, plans, config, seed)
        if profiles[schema.names[0]].rows == 0:
            raise DataError("the input has no rows; check data.input_url")
        columns = {}
        for field in schema:
            kind = resolve_kind(plans[field.name], profiles[field.name], config)
            columns[field.name] = _BUILDERS[kind](field, config).fit(profiles[field.name], seed=seed)
        transform = cls(schema, columns, config.label_column, conditional)
        logger.info(
            "fitted %d columns into %d features: %s", len(columns), transform.output_dim, transform.column_kinds()
        )
        return transform

    @property
    def matrix_columns(self) -> list[str]:
        """The columns encoded in the matrix, in schema order (the label is left out when conditional)."""
        return [name for name in self.schema.names if not (self.conditional and name == self.label_column)]

    @property
    def label_classes(self) -> list[Any]:
        return list(self._label_transform().categories_) if self.label_column else []

    def column_kinds(self) -> dict[str, str]:
        """Column name -> "continuous" or "categorical", in schema order."""
        return {name: self.columns[name].kind for name in self.schema.names}

    def transform(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Encode rows as a (B, output_dim) float32 matrix; columns not in the schema are ignored."""
        matrix = np.empty((data.num_rows, self.output_dim), dtype=np.float32)
        for name in self.matrix_columns:
            start, end = self._slices[name]
            matrix[:, start:end] = self.columns[name].transform(_column(data, name))
        return matrix

    def inverse_transform(self, matrix: np.ndarray, labels: np.ndarray | None = None) -> pa.Table:
        """Decode a (B, output_dim) matrix to a table with `self.schema`.

        Args:
            matrix: decoder outputs in the layout of `spans` (softmax groups are decoded by argmax).
            labels: (B,) label codes into `label_classes`; required exactly when the transform is conditional.
        """
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != self.output_dim:
            raise ValueError(f"inverse_transform expects a (B, {self.output_dim}) matrix, got shape {matrix.shape}")
        if self.conditional and labels is None:
            raise ValueError(
                f"this transform is conditional; pass labels (codes into label_classes) for '{self.label_column}'"
            )
        if not self.conditional and labels is not None:
            raise ValueError("labels are only taken by a conditional transform; the label is decoded from the matrix")
        arrays = []
        for name in self.schema.names:
            if name in self._slices:
                start, end = self._slices[name]
                arrays.append(self.columns[name].inverse_transform(matrix[:, start:end]))
            else:
                labels = np.asarray(labels)
                if labels.shape != (len(matrix),):
                    raise ValueError(f"labels must have shape ({len(matrix)},), got {labels.shape}")
                arrays.append(self._label_transform().decode(labels))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def label_codes(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """(B,) int64 index of each row's label into `label_classes`."""
        label = self._label_transform()
        return label.codes(_column(data, label.column))

    def condition(self, codes: np.ndarray) -> np.ndarray:
        """(B, n_classes) float32 one-hot of label codes."""
        n_classes = len(self._label_transform().categories_)
        codes = np.asarray(codes)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"label codes must be a 1-d integer array, got {codes.dtype} {codes.shape}")
        if len(codes) and (codes.min() < 0 or codes.max() >= n_classes):
            raise DataError(f"label codes must lie in [0, {n_classes}), got values in [{codes.min()}, {codes.max()}]")
        return np.eye(n_classes, dtype=np.float32)[codes]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (no NaN or infinity); `from_state_dict` rebuilds an identical transform."""
        return {
            "version": STATE_VERSION,
            "schema": schema_to_json(self.schema),
            "label_column": self.label_column,
            "conditional": self.conditional,
            "columns": [self.columns[name].state_dict() for name in self.schema.names],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TableTransform:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"transform state version {state.get('version')} is not {STATE_VERSION}; refit it")
        columns = {item["column"]: COLUMN_TRANSFORMS[item["kind"]].from_state_dict(item) for item in state["columns"]}
        return cls(schema_from_json(state["schema"]), columns, state["label_column"], state["conditional"])

    def _label_transform(self) -> CategoricalColumn:
        if self.label_column is None:
            raise ConfigError("no label column is set; set data.label_column to use labels")
        label = self.columns[self.label_column]
        assert isinstance(label, CategoricalColumn)
        return label


def _column(data: pa.RecordBatch | pa.Table, name: str) -> pa.Array | pa.ChunkedArray:
    if name not in data.schema.names:
        raise DataError(f"the data lacks column '{name}'; it has {data.schema.names}")
    return data.column(name)
