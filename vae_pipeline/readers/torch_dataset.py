"""A committed synthetic dataset as a PyTorch `IterableDataset`, streamed shard by shard from its manifest.

Only the shards that `_manifest.json` lists are read, so a reader never sees a partial or stale run. Rows are split
across ranks (distributed training) and DataLoader workers as described in `vae_pipeline.readers.ranges`; order is
a pure function of (seed, epoch, rank, worker, world size, number of workers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from torch.utils.data import IterableDataset

from vae_pipeline import storage
from vae_pipeline.errors import ConfigError, DataError, StorageError
from vae_pipeline.generation.manifest import MANIFEST_FILE, Manifest, manifest_url
from vae_pipeline.readers.buffers import rebatch, shuffle_tables
from vae_pipeline.readers.consumers import Consumer, current_worker, resolve_rank
from vae_pipeline.readers.ranges import (
    ROW_SHUFFLE_KEY,
    consumer_range,
    epoch_rng,
    rank_range,
    shard_order,
    slices_for_range,
)
from vae_pipeline.readers.shards import read_range
from vae_pipeline.readers.tensors import table_to_batch, table_to_rows

logger = logging.getLogger(__name__)

_READ_ROWS = 8192  # rows decoded per Parquet read: bounds memory per consumer, independent of batch_size


class SyntheticDataset(IterableDataset[dict[str, Any]]):
    """The rows of a `vae-pipeline generate` output, for `torch.utils.data.DataLoader` and Ray Train.

    With `batch_size=None` it yields one row at a time as `{column: Python value}` (None for null); batch them with
    `DataLoader(dataset, batch_size=n)`, whose default collate cannot batch None, so prefer batches for nullable
    columns. With `batch_size=n` it yields `{column: batch}` dicts of n rows: numbers as tensors (float columns
    keep their width, NaN for null; integer and boolean columns as int64 and bool, or float64 with NaN when the
    schema lets them hold nulls), other types (strings, categoricals, dates) as lists of Python values; pass
    `DataLoader(dataset, batch_size=None)` so the loader does not batch again. See `vae_pipeline.readers.tensors`.

    Image columns (see `vae_pipeline.image_columns`) come as (C, H, W) tensors per row and (B, C, H, W) tensors
    per batch, in their stored dtype: uint8 images stay uint8 (scale them in the training step, e.g.
    `batch["image"].float() / 255`), float32 images stay float32.

    Each epoch is split into one contiguous run of rows per rank (the same number of rows to within one, exactly
    the same with `equal_ranks`) and each rank's run into one per DataLoader worker, so every row is read once per
    epoch by exactly one consumer. The rank is resolved at construction, so build the dataset in the training
    process (after `init_process_group`, or inside the Ray Train function), not in a DataLoader worker.

    Example:
        >>> dataset = SyntheticDataset("s3://bucket/synthetic", batch_size=256, shuffle=True, seed=0)
        >>> loader = DataLoader(dataset, batch_size=None, num_workers=4)
        >>> for epoch in range(epochs):
        ...     dataset.set_epoch(epoch)
        ...     for batch in loader:
        ...         ...

        A dataset with an image column (here Fashion-MNIST's `image` and `label`):

        >>> batch = next(iter(SyntheticDataset("out/fashion", batch_size=64)))
        >>> batch["image"].shape, batch["image"].dtype  # (B, C, H, W), as stored
        (torch.Size([64, 1, 28, 28]), torch.uint8)
        >>> batch["label"][:2]
        ['Sneaker', 'Bag']
    """

    def __init__(
        self,
        output_url: str,
        *,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        drop_last: bool = False,
        shuffle: bool = False,
        shuffle_buffer: int = 10_000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        equal_ranks: bool = False,
        verify_checksums: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """Read the manifest at `output_url` and check the options; no shard is opened yet.

        Args:
            output_url: the generation output (holding `_manifest.json`), as a URL or local path.
            columns: the columns to read, in this order; all of them (the manifest's schema order) when None.
            batch_size: rows per yielded batch; None yields single rows.
            drop_last: drop each consumer's last batch when it is short (needs `batch_size`).
            shuffle: read shards in a seeded random order per epoch and mix rows in a shuffle buffer.
            shuffle_buffer: rows mixed at a time when shuffling (memory grows with it).
            seed: seeds the shard order and the buffer together with the epoch (see `set_epoch`).
            rank: this process's rank; give with `world_size`, or leave both None to detect them from
                `torch.distributed` (when initialised), else from Ray Train (inside a Ray Train worker), else 0 of 1.
            world_size: how many ranks read the dataset.
            equal_ranks: give every rank exactly rows // world_size rows, leaving out up to world_size - 1 rows
                per epoch (other ones each shuffled epoch), so all ranks take the same number of steps (DDP).
            verify_checksums: check each shard's sha256 against the manifest before reading it (reads the whole
                shard each time, even when a consumer needs only part of it).
            storage_options: passed to fsspec for this URL (credentials, endpoint).

        Raises:
            StorageError: `output_url` holds no `_manifest.json` (no generation run finished there).
            ConfigError: an unknown or repeated column, or an invalid option.
        """
        _check_options(batch_size, drop_last, shuffle_buffer)
        self.output_url = output_url
        self.manifest = _read_committed_manifest(output_url, storage_options)
        self.columns = _select_columns(self.manifest, columns, output_url)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.equal_ranks = equal_ranks
        self.verify_checksums = verify_checksums
        self.storage_options = storage_options
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self._shards = sorted(self.manifest.shards, key=lambda shard: shard.index)
        self._epoch = 0

    @property
    def rows(self) -> int:
        """Rows in the dataset, as the manifest lists them."""
        return self.manifest.rows

    @property
    def rank_rows(self) -> int:
        """Rows this rank reads per epoch, all its DataLoader workers together."""
        start, stop = rank_range(self.rows, self.rank, self.world_size, equal_ranks=self.equal_ranks)
        return stop - start

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the next iteration's order, as `DistributedSampler.set_epoch` does.

        Call it before creating each epoch's DataLoader iterator; workers kept alive with
        `persistent_workers=True` hold the copy they were started with and do not see a later call.
        """
        self._epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        consumer = current_worker(self.rank, self.world_size)
        tables = self._tables(consumer)
        if self.shuffle:
            rng = epoch_rng(self.seed, self._epoch, ROW_SHUFFLE_KEY, consumer.rank, consumer.worker)
            tables = shuffle_tables(tables, self.shuffle_buffer, rng)
        if self.batch_size is None:
            for table in tables:
                yield from table_to_rows(table)
            return
        for table in rebatch(tables, self.batch_size, drop_last=self.drop_last):
            yield table_to_batch(table)

    def _tables(self, consumer: Consumer) -> Iterator[pa.Table]:
        """This consumer's rows for the current epoch, shard piece after shard piece."""
        start, stop = consumer_range(self.rows, consumer, equal_ranks=self.equal_ranks)
        if start == stop:
            logger.warning(
                "consumer %d of %d (rank %d, worker %d) gets no rows: the dataset has %d; use fewer DataLoader "
                "workers or ranks",
                consumer.index,
                consumer.count,
                consumer.rank,
                consumer.worker,
                self.rows,
            )
            return
        order = shard_order(len(self._shards), shuffle=self.shuffle, seed=self.seed, epoch=self._epoch)
        for piece in slices_for_range([shard.rows for shard in self._shards], order, start, stop):
            record = self._shards[piece.shard]
            yield from read_range(
                storage.join_url(self.output_url, record.name),
                record,
                piece.start,
                piece.stop,
                columns=self.columns,
                read_rows=_READ_ROWS,
                verify_checksum=self.verify_checksums,
                storage_options=self.storage_options,
            )


def _check_options(batch_size: int | None, drop_last: bool, shuffle_buffer: int) -> None:
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be a positive number of rows or None for single rows, got {batch_size}")
    if drop_last and batch_size is None:
        raise ConfigError("drop_last needs batch_size; with single rows pass drop_last to the DataLoader instead")
    if shuffle_buffer < 1:
        raise ConfigError(f"shuffle_buffer must be at least 1 row, got {shuffle_buffer}")


def _read_committed_manifest(output_url: str, storage_options: dict[str, Any] | None) -> Manifest:
    url = manifest_url(output_url)
    if not storage.exists(url, storage_options):
        raise StorageError(
            f"{storage.redact_url(output_url)} holds no committed dataset (no {MANIFEST_FILE}); run "
            "`vae-pipeline generate`, or `vae-pipeline generate --resume` to finish an interrupted run"
        )
    manifest = Manifest.from_json(storage.read_json(url, storage_options))
    listed = sum(shard.rows for shard in manifest.shards)
    if listed != manifest.rows:
        raise DataError(
            f"{storage.redact_url(url)} says {manifest.rows} rows but its shards add up to {listed}; "
            "the manifest is damaged; regenerate with `vae-pipeline generate --overwrite`"
        )
    return manifest


def _select_columns(manifest: Manifest, columns: Sequence[str] | None, output_url: str) -> list[str]:
    available = [str(column["name"]) for column in manifest.schema]
    if columns is None:
        return available
    if isinstance(columns, str):
        raise ConfigError(f"columns must be a list of names, got the string {columns!r}; pass [{columns!r}]")
    chosen = list(columns)
    if not chosen:
        raise ConfigError(f"columns is empty; pass None for all, or some of {available}")
    for name in chosen:
        if name not in available:
            raise ConfigError(
                f"column {name!r} is not in the dataset at {storage.redact_url(output_url)}; "
                f"available columns: {available}"
            )
    repeated = sorted({name for name in chosen if chosen.count(name) > 1})
    if repeated:
        raise ConfigError(f"columns {repeated} are given more than once; name each column once")
    return chosen
