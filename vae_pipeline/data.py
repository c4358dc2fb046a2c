"""Reading the user's table: Parquet (a file, a directory or a glob) or CSV from any URL, as a stream of batches.

The table is never materialised in the driver: `TableSource.batches()` streams Arrow record batches through
pyarrow.dataset, and `TableSource.files` + `arrow_filesystem()` let Ray Data read the same files in parallel.
Image columns in other layouts (encoded bytes, Hugging Face's struct, Ray's tensors) are converted to the canonical
tensor type batch by batch (`TableSource.images`); a MedMNIST-style `.npz` file, small by nature, is read whole.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
import pyarrow.fs as pa_fs
from fsspec.spec import AbstractFileSystem

from vae_pipeline import storage
from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.image_inputs import ImageConversion, image_layout, plan_images
from vae_pipeline.npz_input import npz_table

_UNSUPPORTED = (pa.types.is_nested, pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)
CSV_NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]


@dataclass(frozen=True)
class TableSource:
    """A readable table: the resolved files, their format and the schema the pipeline uses (drops applied).

    `schema` is the converted one: image columns carry the canonical type, whatever layout the files hold them in.
    """

    url: str
    format: str
    files: tuple[str, ...]
    filesystem: AbstractFileSystem
    schema: pa.Schema
    dataset: pa_ds.Dataset
    images: ImageConversion

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def batches(self, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream the table in file order, only the pipeline's columns, never more than a batch at a time."""
        row = 0
        try:
            for batch in self.dataset.to_batches(columns=self.columns, batch_size=batch_rows, use_threads=False):
                if batch.num_rows:
                    yield self.images.convert(batch, first_row=row)
                row += batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read {storage.redact_url(self.url)}: {_first_line(exc)}") from exc

    def count_rows(self) -> int:
        return int(self.dataset.count_rows())

    def arrow_filesystem(self) -> pa_fs.FileSystem:
        """The same filesystem as pyarrow sees it, for Ray Data's readers."""
        return pa_fs.PyFileSystem(pa_fs.FSSpecHandler(self.filesystem))


def open_source(config: DataConfig) -> TableSource:
    """Resolve `config.input_url`, open it lazily and check its schema against the config.

    Raises:
        DataError: missing input, unreadable or corrupt files, an empty table, unsupported column types or image
            layouts, more than one image column, unknown drop, override or label columns.
    """
    fs, files = _resolve_files(config.input_url, config.storage_options)
    fmt = _format_of(config, files)
    if fmt == "npz":
        dataset = _open_npz(config.input_url, fs, files)
    else:
        dataset = _open_dataset(config.input_url, fs, files, fmt)
    schema = _pipeline_schema(dataset.schema, config)
    try:
        rows = int(dataset.count_rows())
        if rows and fmt == "parquet":
            _check_null_columns(dataset, schema, rows)
        images = plan_images(schema, dataset) if rows else ImageConversion()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"cannot read {storage.redact_url(config.input_url)} as {fmt}: {_first_line(exc)}; "
            "check no file is corrupt or set data.format"
        ) from exc
    if rows == 0:
        raise DataError(
            f"{storage.redact_url(config.input_url)} holds no rows; point data.input_url at a non-empty table"
        )
    return TableSource(config.input_url, fmt, tuple(files), fs, images.output_schema(schema), dataset, images)


def _check_null_columns(dataset: pa_ds.Dataset, schema: pa.Schema, rows: int) -> None:
    """Refuse all-null columns up front from Parquet footers (no data scan); other formats find them when fitting."""
    nulls: dict[str, int | None] = dict.fromkeys(schema.names, 0)
    for fragment in dataset.get_fragments():
        metadata = fragment.metadata
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for index in range(row_group.num_columns):
                chunk = row_group.column(index)
                known = nulls.get(chunk.path_in_schema)
                if known is None:  # not a pipeline column, or a footer without null counts
                    continue
                stats = chunk.statistics
                has_count = stats is not None and stats.has_null_count
                nulls[chunk.path_in_schema] = known + stats.null_count if has_count else None
    for name, count in nulls.items():
        if count == rows:
            raise DataError(f"column '{name}' is all null; add it to data.drop_columns")


def _resolve_files(url: str, storage_options: dict[str, Any]) -> tuple[AbstractFileSystem, list[str]]:
    fs, path = storage.url_to_fs(url, storage_options)
    with storage.failures_named(url, "list"):  # missing or refused credentials, an unreachable endpoint
        if any(ch in path for ch in "*?["):
            files = sorted(fs.glob(path))
        elif fs.isdir(path):
            # Like pyarrow's discovery: skip hidden and underscore files and folders (_temporary, .ipynb_checkpoints).
            files = sorted(f for f in fs.find(path) if not _is_hidden(posixpath.relpath(f, path)) and fs.isfile(f))
        elif fs.exists(path):
            files = [path]
        else:
            files = []
    if not files:
        raise DataError(
            f"input {storage.redact_url(url)} does not exist or matches no files; check data.input_url (or --input)"
        )
    return fs, files


def _is_hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _format_of(config: DataConfig, files: list[str]) -> str:
    if config.format != "auto":
        return config.format
    suffixes = {posixpath.splitext(f)[1].lower() for f in files}
    if suffixes <= {".csv", ".tsv"}:
        return "csv"
    if suffixes == {".npz"}:
        return "npz"
    return "parquet"


def _open_npz(url: str, fs: AbstractFileSystem, files: list[str]) -> pa_ds.Dataset:
    """A MedMNIST-style archive, read whole (tens of MB at most) and served as an in-memory dataset."""
    if len(files) != 1:
        raise DataError(
            f"{storage.redact_url(url)} matches {len(files)} files, but an .npz input is one file; "
            "point data.input_url at one .npz file"
        )
    with storage.failures_named(url, "read"):
        content = fs.cat_file(files[0])
    return pa_ds.dataset(npz_table(content, storage.redact_url(url)))


def _open_dataset(url: str, fs: AbstractFileSystem, files: list[str], fmt: str) -> pa_ds.Dataset:
    arrow_fs = pa_fs.PyFileSystem(pa_fs.FSSpecHandler(fs))
    file_format: pa_ds.FileFormat = pa_ds.ParquetFileFormat()
    if fmt == "csv":
        file_format = pa_ds.CsvFileFormat(
            convert_options=pa_csv.ConvertOptions(null_values=CSV_NULL_VALUES, strings_can_be_null=True)
        )
    try:
        return pa_ds.dataset(files, filesystem=arrow_fs, format=file_format)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"cannot read {storage.redact_url(url)} as {fmt}: {_first_line(exc)}; "
            "check the file is not corrupt or set data.format"
        ) from exc


def _pipeline_schema(schema: pa.Schema, config: DataConfig) -> pa.Schema:
    available = list(schema.names)
    for name in [*config.drop_columns, *config.column_kinds]:
        if name not in available:
            raise DataError(f"column '{name}' named in the config is not in the data; columns are: {available}")
    if config.label_column is not None and config.label_column not in available:
        raise DataError(
            f"label column '{config.label_column}' is not in the data; pick one of {available} (data.label_column)"
        )
    if config.label_column in config.dropped_columns:
        where = "data.drop_columns" if config.label_column in config.drop_columns else "data.column_kinds as drop"
        raise DataError(f"label column '{config.label_column}' is also in {where}; keep it or unset the label")
    kept = pa.schema([field for field in schema if field.name not in config.dropped_columns])
    for field in kept:
        if pa.types.is_null(field.type):
            raise DataError(f"column '{field.name}' is all null; add it to data.drop_columns")
        if image_layout(field) is None and any(check(field.type) for check in _UNSUPPORTED):
            raise DataError(
                f"column '{field.name}' has unsupported type {field.type}; "
                "add it to data.drop_columns (nested columns, and binary ones that hold no images, are not modelled)"
            )
    if not kept.names:
        raise DataError("every column is dropped; remove some names from data.drop_columns")
    return kept


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
