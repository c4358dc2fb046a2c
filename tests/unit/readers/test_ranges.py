"""ranges.py: the split of an epoch's rows over ranks and workers, and the pieces of shards it reads."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vae_pipeline.readers.consumers import Consumer
from vae_pipeline.readers.ranges import RowSlice, consumer_range, epoch_rng, rank_range, shard_order, slices_for_range

SHARD_ROWS = [4, 3, 5, 1, 2]


@pytest.mark.parametrize(
    ("total", "world_size", "equal_ranks", "expected"),
    [
        (15, 2, False, [(0, 7), (7, 15)]),
        (15, 2, True, [(0, 7), (7, 14)]),
        (15, 4, False, [(0, 3), (3, 7), (7, 11), (11, 15)]),
        (15, 4, True, [(0, 3), (3, 6), (6, 9), (9, 12)]),
        (2, 3, False, [(0, 0), (0, 1), (1, 2)]),
        (2, 3, True, [(0, 0), (0, 0), (0, 0)]),
    ],
)
def test_rank_ranges(total: int, world_size: int, equal_ranks: bool, expected: list[tuple[int, int]]) -> None:
    assert [rank_range(total, r, world_size, equal_ranks=equal_ranks) for r in range(world_size)] == expected


def test_workers_cut_their_rank_range() -> None:
    ranges = [consumer_range(15, Consumer(rank, 2, worker, 2)) for rank in range(2) for worker in range(2)]
    assert ranges == [(0, 3), (3, 7), (7, 11), (11, 15)]


@pytest.mark.parametrize(
    ("total", "world_size", "num_workers"), itertools.product([0, 1, 7, 15, 64], [1, 2, 3], [1, 2, 5])
)
def test_consumers_partition_the_epoch(total: int, world_size: int, num_workers: int) -> None:
    for equal_ranks in (False, True):
        consumers = [Consumer(r, world_size, w, num_workers) for r in range(world_size) for w in range(num_workers)]
        ranges = [consumer_range(total, c, equal_ranks=equal_ranks) for c in consumers]
        covered = [row for start, stop in ranges for row in range(start, stop)]
        end = total - total % world_size if equal_ranks else total
        assert covered == list(range(end))  # in consumer-index order, each row once
        per_rank = [
            sum(stop - start for start, stop in ranges[r * num_workers : (r + 1) * num_workers])
            for r in range(world_size)
        ]
        assert max(per_rank) - min(per_rank) == (0 if equal_ranks else int(total % world_size != 0))


def test_slices_for_a_range_in_manifest_order() -> None:
    assert slices_for_range(SHARD_ROWS, range(5), 3, 9) == [RowSlice(0, 3, 4), RowSlice(1, 0, 3), RowSlice(2, 0, 2)]
    assert slices_for_range(SHARD_ROWS, range(5), 0, 15) == [RowSlice(i, 0, n) for i, n in enumerate(SHARD_ROWS)]
    assert slices_for_range(SHARD_ROWS, range(5), 12, 13) == [RowSlice(3, 0, 1)]
    assert slices_for_range(SHARD_ROWS, range(5), 5, 5) == []


def test_slices_follow_the_shard_order() -> None:
    # Epoch sequence: shard 2 (rows 0-4), shard 4 (5-6), shard 0 (7-10), shard 3 (11), shard 1 (12-14).
    order = [2, 4, 0, 3, 1]
    assert slices_for_range(SHARD_ROWS, order, 4, 12) == [
        RowSlice(2, 4, 5),
        RowSlice(4, 0, 2),
        RowSlice(0, 0, 4),
        RowSlice(3, 0, 1),
    ]
    assert sum(s.rows for s in slices_for_range(SHARD_ROWS, order, 0, 15)) == 15


def test_shard_order_is_a_seeded_permutation_per_epoch() -> None:
    assert shard_order(10, shuffle=False, seed=1, epoch=3) == list(range(10))
    first = shard_order(10, shuffle=True, seed=1, epoch=0)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert shard_order(10, shuffle=True, seed=1, epoch=0) == first
    assert shard_order(10, shuffle=True, seed=1, epoch=1) != first
    assert shard_order(10, shuffle=True, seed=2, epoch=0) != first


def test_epoch_streams_differ_from_generation_shard_streams() -> None:
    shard_stream = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(0,))).random(4)
    assert not np.array_equal(epoch_rng(5, 0, 0).random(4), shard_stream)
    assert not np.array_equal(epoch_rng(5, 0, 1, 0, 0).random(4), epoch_rng(5, 0, 1, 0, 1).random(4))
