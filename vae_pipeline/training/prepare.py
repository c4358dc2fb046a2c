"""From the user's table to model inputs: fit the transform in one streaming pass, and encode rows for Ray Data.

Holdout rows (a seeded share kept for evaluation) never reach the transform, the model or the statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig, PipelineConfig
from vae_pipeline.data import TableSource
from vae_pipeline.split import Split, split_codes
from vae_pipeline.transforms.table import TableTransform


def modelled_batches(source: TableSource, data: DataConfig) -> Iterator[pa.RecordBatch]:
    """The train and validation rows, streamed; the holdout is filtered out."""
    for batch in source.batches(data.batch_rows):
        keep = split_codes(batch, data) != Split.HOLDOUT
        if keep.any():
            yield batch.filter(pa.array(keep))


def fit_table_transform(source: TableSource, config: PipelineConfig) -> TableTransform:
    return TableTransform.fit(
        modelled_batches(source, config.data),
        source.schema,
        config.data,
        conditional=config.model.conditional,
        seed=config.training.seed,
    )


class EncodeRows:
    """Ray Data batch mapper: Arrow rows -> {"x": (B, D), "c": (B, C) when conditional, "split": (B,)}.

    A class so each Ray actor rebuilds the fitted transform once, not once per batch.
    """

    def __init__(self, transform_state: dict[str, Any], data: dict[str, Any]) -> None:
        self.transform = TableTransform.from_state_dict(transform_state)
        self.data = DataConfig.model_validate(data)

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        # Holdout rows go no further: the transform never saw them and may not encode them (a null it never met).
        codes = split_codes(batch, self.data)
        modelled = codes != Split.HOLDOUT
        batch = batch.filter(pa.array(modelled))
        transform = self.transform
        if batch.num_rows == 0:
            out = {"x": np.zeros((0, transform.output_dim), np.float32), "split": codes[modelled]}
            if transform.conditional:
                out["c"] = np.zeros((0, len(transform.label_classes)), np.float32)
            return out
        out = {"x": transform.transform(batch), "split": codes[modelled]}
        if transform.conditional:
            out["c"] = transform.condition(transform.label_codes(batch))
        return out


def select_split(batch: dict[str, np.ndarray], split: int) -> dict[str, np.ndarray]:
    """Keep the rows of one split (a vectorised filter for `map_batches`)."""
    keep = batch["split"] == split
    return {name: values[keep] for name, values in batch.items() if name != "split"}
