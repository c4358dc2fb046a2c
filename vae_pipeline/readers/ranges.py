"""Which rows each consumer reads in an epoch: pure arithmetic on the manifest's shard row counts.

The epoch's rows are the shards laid end to end (in manifest order, or a seeded permutation of it when shuffling).
That sequence is cut into one contiguous range per rank, and each rank's range into one per DataLoader worker.

Why row ranges rather than whole shards dealt round-robin: ranks get the same number of rows to within one (to
exactly the same with `equal_ranks`), which DDP needs because every rank must take the same number of steps; a
dataset with fewer shards than consumers still reaches all of them; and the cost is small, since a range touches
whole shards except at its two ends, where the reader decodes at most one extra Parquet row group each. Row-group
granularity would need every shard's footer before planning, and would still leave ranks uneven.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vae_pipeline.readers.consumers import Consumer

SHARD_ORDER_KEY = 0  # epoch_rng keys: the shard order, shared by every consumer
ROW_SHUFFLE_KEY = 1  # followed by (rank, worker): each consumer's shuffle buffer


@dataclass(frozen=True)
class RowSlice:
    """Rows [start, stop) of the shard at position `shard` in the manifest's shard list."""

    shard: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def epoch_rng(seed: int, epoch: int, *key: int) -> np.random.Generator:
    """The generator for one use in one epoch; `key` tells uses (and consumers) apart.

    The spawn key is at least two long, so it never repeats a generation shard's stream (`spawn_key=(index,)`).
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, *key)))


def shard_order(count: int, *, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """Shard positions in epoch order; every consumer computes the same one from (seed, epoch)."""
    if not shuffle:
        return list(range(count))
    return [int(i) for i in epoch_rng(seed, epoch, SHARD_ORDER_KEY).permutation(count)]


def rank_range(total: int, rank: int, world_size: int, *, equal_ranks: bool = False) -> tuple[int, int]:
    """The rank's [start, stop) in the epoch's row sequence; with `equal_ranks` the last total % world_size go."""
    if equal_ranks:
        per_rank = total // world_size
        return rank * per_rank, (rank + 1) * per_rank
    return _part(0, total, rank, world_size)


def consumer_range(total: int, consumer: Consumer, *, equal_ranks: bool = False) -> tuple[int, int]:
    """The consumer's [start, stop): its rank's range, cut into `num_workers` near-equal parts."""
    start, stop = rank_range(total, consumer.rank, consumer.world_size, equal_ranks=equal_ranks)
    return _part(start, stop, consumer.worker, consumer.num_workers)


def slices_for_range(shard_rows: Sequence[int], order: Sequence[int], start: int, stop: int) -> list[RowSlice]:
    """The pieces of shards that rows [start, stop) of the epoch sequence come from, in reading order.

    Args:
        shard_rows: rows of each shard, by position in the manifest.
        order: shard positions in epoch order (from `shard_order`).
        start: first row of the range in the epoch sequence.
        stop: one past the last row.
    """
    slices: list[RowSlice] = []
    offset = 0  # where the current shard starts in the epoch sequence
    for position in order:
        rows = shard_rows[position]
        low, high = max(start, offset), min(stop, offset + rows)
        if low < high:
            slices.append(RowSlice(position, low - offset, high - offset))
        offset += rows
        if offset >= stop:
            break
    return slices


def _part(start: int, stop: int, index: int, parts: int) -> tuple[int, int]:
    """Part `index` of `parts` near-equal contiguous parts of [start, stop) (sizes differ by at most one)."""
    size = stop - start
    return start + index * size // parts, start + (index + 1) * size // parts
