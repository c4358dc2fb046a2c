"""The whole-table transform: Arrow rows <-> the float32 matrix the VAE reads and writes.

`TableTransform.fit` reads the record batches once (the table is never held in memory), decides each column's
role (transforms/roles.py) and fits one column transform per column. The matrix layout is described by `spans`;
columns that take no place in it (ids, constants) have none. Decoding returns a table with the original column
names, order and Arrow types; ids are numbered from the decoded rows' place in the dataset (`row_offset`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import ConfigError, DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import is_temporal, schema_from_json, schema_to_json
from vae_pipeline.transforms.base import ColumnTransform, DecodeContext
from vae_pipeline.transforms.categorical import CategoricalColumn, TextColumn
from vae_pipeline.transforms.constant import ConstantColumn
from vae_pipeline.transforms.continuous import ContinuousColumn
from vae_pipeline.transforms.discrete import DiscreteColumn
from vae_pipeline.transforms.identifier import IdColumn
from vae_pipeline.transforms.image import ImageColumn
from vae_pipeline.transforms.inference import check_names, plan_kind, profile_columns
from vae_pipeline.transforms.parsed_text import ParsedTextColumn
from vae_pipeline.transforms.roles import decide

logger = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: column roles, zero-width columns (id, constant), text, parsed text, rare categories

COLUMN_TRANSFORMS: dict[str, type[ColumnTransform]] = {
    column.kind: column
    for column in (
        ContinuousColumn,
        DiscreteColumn,
        CategoricalColumn,
        TextColumn,
        IdColumn,
        ConstantColumn,
        ParsedTextColumn,
        ImageColumn,
    )
}
_UNMODELLED = {"id", "text", "constant"}


class TableTransform:
    """A fitted, reversible map between Arrow tables and (B, output_dim) float32 matrices.

    Attributes:
        schema: the input schema (after `data.drop_columns`); `inverse_transform` returns exactly this schema.
        spans: the layout of the matrix, in order, covering [0, output_dim).
        output_dim: the matrix width.
        label_column: the label column, or None.
        label_classes: the label's categories as JSON values (None for null); [] without a label.
        conditional: when True the label is not in the matrix; `inverse_transform` takes it as `labels` codes.
        roles: column name -> (role, reason), in schema order, then the columns dropped by a `drop` role.
    """

    def __init__(
        self,
        schema: pa.Schema,
        columns: dict[str, ColumnTransform],
        label_column: str | None = None,
        conditional: bool = False,
        roles: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        if conditional and label_column is None:
            raise ConfigError("a conditional transform needs data.label_column; set it or conditional: false")
        self.schema = schema
        self.columns = columns
        self.label_column = label_column
        self.conditional = conditional
        self.roles = roles if roles is not None else {name: (_default_role(columns[name]), "") for name in schema.names}
        self.spans: list[Span] = []
        self._slices: dict[str, tuple[int, int]] = {}
        end = 0
        for name in self.matrix_columns:
            start = end
            self.spans.extend(columns[name].spans(start))
            end = start + columns[name].output_width
            self._slices[name] = (start, end)
        self.output_dim = end

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
            schema: the input schema after `config.drop_columns` were removed (a `drop` role is removed here).
            config: column kinds, the label column and the limits on categories and modes.
            conditional: keep the label column out of the matrix (a conditional VAE's condition).
            seed: seeds the reservoir samples, the mixtures and the id permutations.

        Raises:
            DataError: an unsupported or all-null column, an override the column cannot take, dates in mixed
                formats, an id override on repeated values, nothing left to model, or a config name not in `schema`.
        """
        if conditional and not config.label_column:
            raise ConfigError("conditional=True needs data.label_column; set the label column or conditional: false")
        dropped = [name for name in config.dropped_columns if name in schema.names]
        schema = pa.schema([field for field in schema if field.name not in dropped])
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
        decisions = {
            field.name: decide(
                field, plans[field.name], profiles[field.name], config, is_label=field.name == config.label_column
            )
            for field in schema
        }
        _check_something_to_model(decisions)
        columns = {name: decision.transform.fit(profiles[name], seed=seed) for name, decision in decisions.items()}
        roles = {name: (decision.role, decision.reason) for name, decision in decisions.items()}
        roles |= {
            name: ("drop", "data.column_kinds: drop") for name, kind in config.column_kinds.items() if kind == "drop"
        }
        transform = cls(schema, columns, config.label_column, conditional, roles)
        for name, (role, reason) in roles.items():
            logger.info("column '%s': %s (%s)", name, role, reason)
        logger.info("fitted %d columns into %d features", len(columns), transform.output_dim)
        return transform

    @property
    def matrix_columns(self) -> list[str]:
        """The columns encoded in the matrix, in schema order (the label is left out when conditional)."""
        return [name for name in self.schema.names if not (self.conditional and name == self.label_column)]

    @property
    def label_classes(self) -> list[Any]:
        return list(self._label_transform().categories_) if self.label_column else []

    @property
    def image_column(self) -> str | None:
        """The image column, or None for a plain table (one image column at most: data.py refuses more)."""
        return next((name for name in self.matrix_columns if isinstance(self.columns[name], ImageColumn)), None)

    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the image column."""
        name = self.image_column
        if name is None:
            raise ConfigError("this table has no image column")
        column = self.columns[name]
        assert isinstance(column, ImageColumn)
        channels, height, width = column.shape_
        return channels, height, width

    def column_kinds(self) -> dict[str, str]:
        """Column name -> role (continuous, discrete, categorical, datetime, id, text, constant), in schema order."""
        return {name: self.roles[name][0] for name in self.schema.names}

    def column_roles(self) -> dict[str, tuple[str, str]]:
        """Column name -> (role, reason), in schema order, then the columns a `drop` role left out."""
        return dict(self.roles)

    def scoring_kinds(self) -> dict[str, str]:
        """Column name -> "continuous" or "categorical" for the columns evaluation scores (not ids, text,
        constants); score them on `scoring_view`, where numbers and dates written as text are numbers."""
        kinds = {name: self.columns[name].scored_as for name in self.schema.names}
        return {name: kind for name, kind in kinds.items() if kind is not None}

    def scoring_view(self, data: pa.RecordBatch | pa.Table) -> pa.Table:
        """The scored columns of `data` (see `scoring_kinds`) as evaluation compares them."""
        names = list(self.scoring_kinds())
        arrays = [self.columns[name].scoring_values(_column(data, name)) for name in names]
        return pa.Table.from_arrays(arrays, names=names)

    def transform(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Encode rows as a (B, output_dim) float32 matrix; columns not in the schema are ignored."""
        matrix = np.empty((data.num_rows, self.output_dim), dtype=np.float32)
        for name in self.matrix_columns:
            start, end = self._slices[name]
            if end > start:
                matrix[:, start:end] = self.columns[name].transform(_column(data, name))
        return matrix

    def inverse_transform(
        self,
        matrix: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        row_offset: int = 0,
        rng: np.random.Generator | None = None,
    ) -> pa.Table:
        """Decode a (B, output_dim) matrix to a table with `self.schema`.

        Args:
            matrix: decoder outputs in the layout of `spans` (softmax groups are decoded by argmax).
            labels: (B,) label codes into `label_classes`; required exactly when the transform is conditional.
            row_offset: the global index of the first row in its dataset (the rows of all earlier shards), so
                generated ids are unique across shards.
            rng: draws the rare categories' members; a fixed seed when None.
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
        context = DecodeContext(row_offset, rng if rng is not None else np.random.default_rng(0))
        arrays = []
        for name in self.schema.names:
            if name in self._slices:
                start, end = self._slices[name]
                arrays.append(self.columns[name].inverse_transform(matrix[:, start:end], context))
            else:
                labels = np.asarray(labels)
                if labels.shape != (len(matrix),):
                    raise ValueError(f"labels must have shape ({len(matrix)},), got {labels.shape}")
                arrays.append(self._label_transform().decode(labels))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def with_label(self, table: pa.Table, codes: np.ndarray) -> pa.Table:
        """`table` with its label column replaced by the classes that `codes` (indices into label_classes) name."""
        label = self._label_transform()
        index = table.schema.get_field_index(label.column)
        return table.set_column(index, table.schema.field(index), label.decode(np.asarray(codes)))

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
            "roles": {name: list(role) for name, role in self.roles.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TableTransform:
        """Rebuild from `state_dict`; a version-1 state (before roles) loads as it was and decodes the same rows."""
        if state.get("version") not in (1, STATE_VERSION):
            raise DataError(f"transform state version {state.get('version')} is not {STATE_VERSION}; refit it")
        items = [_upgrade_column(item) for item in state["columns"]] if state["version"] == 1 else state["columns"]
        columns = {item["column"]: COLUMN_TRANSFORMS[item["kind"]].from_state_dict(item) for item in items}
        schema = schema_from_json(state["schema"])
        roles = {name: (role, reason) for name, (role, reason) in state["roles"].items()} if "roles" in state else None
        return cls(schema, columns, state["label_column"], state["conditional"], roles)

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


def _default_role(column: ColumnTransform) -> str:
    """The role of a column built without `fit` (which records the role it decided)."""
    if column.kind == "continuous" and is_temporal(column.arrow_type):
        return "datetime"
    return "datetime" if column.kind == "parsed_text" else column.kind


def _check_something_to_model(decisions: dict[str, Any]) -> None:
    if all(decision.role in _UNMODELLED for decision in decisions.values()):
        shown = ", ".join(f"{name}: {decision.role}" for name, decision in list(decisions.items())[:6])
        raise DataError(
            f"nothing to model: every column is an id, free text or a constant ({shown}); set "
            "data.column_kinds for one of them (e.g. categorical) or add columns with values to learn"
        )


def _upgrade_column(item: dict[str, Any]) -> dict[str, Any]:
    """A version-1 column state: categoricals had no rare class."""
    return {"rare_values_": [], "rare_counts_": [], **item} if item["kind"] == "categorical" else item
