"""The shard plan: how many rows each shard gets and the seed it draws from.

Shard i draws from child i of `numpy.random.SeedSequence(seed)`, which is independent of the other shards and of
how many workers run them, so a shard's bytes depend only on (model, statistics, sampler, seed, i, its rows, and the
decode batch size, since draws are made batch by batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ShardSpec:
    index: int
    rows: int
    seed: int
    start: int = 0  # rows of all earlier shards: the shard's first row in the dataset (fresh ids count from it)

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def seed_sequence(self) -> np.random.SeedSequence:
        """Equal to `SeedSequence(seed).spawn(n)[index]` for any n > index."""
        return np.random.SeedSequence(self.seed, spawn_key=(self.index,))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def plan_shards(rows: int, rows_per_shard: int, seed: int) -> list[ShardSpec]:
    """Split `rows` into shards of `rows_per_shard` (the last one takes the remainder)."""
    if rows < 1 or rows_per_shard < 1:
        raise ValueError(f"rows ({rows}) and rows_per_shard ({rows_per_shard}) must be positive")
    count = -(-rows // rows_per_shard)
    return [
        ShardSpec(index=i, rows=min(rows_per_shard, rows - i * rows_per_shard), seed=seed, start=i * rows_per_shard)
        for i in range(count)
    ]
