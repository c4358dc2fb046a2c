"""The shard plan: how many rows each shard gets and the seed it draws from.

Shard i draws from child i of `numpy.random.SeedSequence(seed)`, which is independent of the other shards and of
how many workers run them, so a shard's bytes depend only on (model, statistics, sampler, seed, i, its rows, and the
decode batch size, since draws are made batch by batch).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ShardSpec:
    """One shard of a run.

    start: for synthetic rows, the rows of all earlier synthetic shards (fresh ids count from it); for a `real`
        shard, the first input row it copies.
    class_rows: rows per label code (an augmented run's exact quotas), summing to `rows`; empty: the sampler
        decides each row's class.
    source: `synthetic`, or `real` for a shard that copies input rows into an augmented dataset.
    """

    index: int
    rows: int
    seed: int
    start: int = 0
    class_rows: tuple[int, ...] = ()
    source: str = "synthetic"

    @property
    def name(self) -> str:
        return real_shard_name(self.start) if self.source == "real" else shard_name(self.index)

    def seed_sequence(self) -> np.random.SeedSequence:
        """Equal to `SeedSequence(seed).spawn(n)[index]` for any n > index."""
        return np.random.SeedSequence(self.seed, spawn_key=(self.index,))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardSpec:
        return cls(**{**data, "class_rows": tuple(data.get("class_rows", ()))})


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def real_shard_name(first_row: int) -> str:
    """A shard of copied input rows, named by its first row (unique and stable for any number of synthetic shards)."""
    return f"real-{first_row:012d}.parquet"


def plan_shards(rows: int, rows_per_shard: int, seed: int) -> list[ShardSpec]:
    """Split `rows` into shards of `rows_per_shard` (the last one takes the remainder)."""
    if rows < 1 or rows_per_shard < 1:
        raise ValueError(f"rows ({rows}) and rows_per_shard ({rows_per_shard}) must be positive")
    count = -(-rows // rows_per_shard)
    return [
        ShardSpec(index=i, rows=min(rows_per_shard, rows - i * rows_per_shard), seed=seed, start=i * rows_per_shard)
        for i in range(count)
    ]


def plan_class_shards(class_rows: list[int], rows_per_shard: int, seed: int) -> list[ShardSpec]:
    """Shards whose rows are laid out class by class (codes in order), each with its exact share of every class.

    Shard i covers rows [i * rows_per_shard, ...) of that layout, so its quotas depend only on the totals.
    """
    plan = plan_shards(sum(class_rows), rows_per_shard, seed)
    bounds = np.concatenate([[0], np.cumsum(class_rows)])
    specs = []
    for spec in plan:
        low, high = spec.start, spec.start + spec.rows
        quotas = tuple(int(max(0, min(high, b) - max(low, a))) for a, b in itertools.pairwise(bounds))
        specs.append(ShardSpec(spec.index, spec.rows, seed, spec.start, class_rows=quotas))
    return specs


def plan_real_shards(rows: int, rows_per_shard: int, first_index: int) -> list[ShardSpec]:
    """Shards that copy the input's `rows` rows in order, indexed after the synthetic shards."""
    return [
        ShardSpec(first_index + i, min(rows_per_shard, rows - start), 0, start, source="real")
        for i, start in enumerate(range(0, rows, rows_per_shard))
    ]
