"""Bounded, seeded samples of real rows for scoring: the holdout the model never saw, and training rows.

One streaming pass keeps, per split, the rows with the smallest seeded keys (bottom-k), so each sample is uniform
and deterministic, and memory stays bounded by k rows per split. Holdout rows are keyed by content (independent of
file order). Training rows are keyed by position, so that repeated rows are sampled independently: the privacy
baseline counts how often a training row has a twin among the others, which a content-keyed sample (every copy of a
row in or out together) would overstate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.data import TableSource
from vae_pipeline.split import Split, position_keys, row_keys, split_codes


@dataclass(frozen=True)
class RealSample:
    holdout: pa.Table
    train: pa.Table
    holdout_total: int  # holdout rows in the whole table, not only the sample


def sample_real_rows(source: TableSource, data: DataConfig, rows: int, seed: int) -> RealSample:
    """Up to `rows` holdout rows and `rows` training rows, uniformly at random (seeded)."""
    kept: dict[int, tuple[pa.Table, np.ndarray]] = {}
    holdout_total = position = 0
    for batch in source.batches(data.batch_rows):
        codes = split_codes(batch, data)
        keys = {
            Split.HOLDOUT: row_keys(batch, seed),
            Split.TRAIN: position_keys(position, batch.num_rows, seed),
        }
        position += batch.num_rows
        holdout_total += int((codes == Split.HOLDOUT).sum())
        for split, split_keys in keys.items():
            mask = codes == split
            if mask.any():
                kept[split] = _bottom_k(kept.get(split), batch.filter(pa.array(mask)), split_keys[mask], rows)
    empty = source.schema.empty_table()
    holdout = kept[Split.HOLDOUT][0] if Split.HOLDOUT in kept else empty
    train = kept[Split.TRAIN][0] if Split.TRAIN in kept else empty
    return RealSample(holdout=holdout, train=train, holdout_total=holdout_total)


def _bottom_k(
    current: tuple[pa.Table, np.ndarray] | None, batch: pa.RecordBatch, keys: np.ndarray, k: int
) -> tuple[pa.Table, np.ndarray]:
    table = pa.Table.from_batches([batch])
    if current is not None:
        table = pa.concat_tables([current[0], table])
        keys = np.concatenate([current[1], keys])
    order = np.argsort(keys, kind="stable")[:k]
    return table.take(pa.array(order)), keys[order]
