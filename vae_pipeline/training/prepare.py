"""From the user's table to model inputs: fit the transform in one streaming pass, and encode rows for Ray Data.

Holdout rows (a seeded share kept for evaluation) never reach the transform, the model or the statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig, PipelineConfig
from vae_pipeline.data import TableSource
from vae_pipeline.split import Split, split_codes, split_uniforms
from vae_pipeline.transforms.table import TableTransform

logger = logging.getLogger(__name__)

# The largest share of a small table the holdout takes on its own; the holdout rows it aims for (scores on fewer are
# rough), and at least this margin over `evaluation.min_holdout_rows` (the content-hash split draws the holdout's size
# at random, and repeated rows move together).
MAX_AUTO_HOLDOUT = 0.3
TARGET_HOLDOUT_ROWS = 40
HOLDOUT_MARGIN = 1.3
# A null training.batch_size: about this many gradient steps per epoch, within these bounds.
STEPS_PER_EPOCH = 16
MIN_BATCH, MAX_BATCH = 64, 1024


def with_evaluable_holdout(config: PipelineConfig, source: TableSource) -> PipelineConfig:
    """On a small table, a holdout large enough for the evaluation to score (`evaluation.min_holdout_rows`).

    10% of 120 rows is 12 unseen rows, too few to score, and the default run would stop at the evaluation. Where
    `data.holdout_fraction` is left null, the share is 10%, or more until the holdout holds `TARGET_HOLDOUT_ROWS`
    (or the minimum with a margin, if larger), at most `MAX_AUTO_HOLDOUT`; the bundle records the share used, and
    every later step reads it from there. The share is found from the rows' own split numbers, since repeated rows
    share one and move into the holdout together.
    """
    data = config.data
    needed = max(TARGET_HOLDOUT_ROWS, math.ceil(HOLDOUT_MARGIN * config.evaluation.min_holdout_rows))
    if data.holdout_fraction is not None:
        return config
    fraction = data.holdout_share
    if source.count_rows() * fraction < 10 * needed:  # a large table's 10% is plenty
        wanted = math.ceil(_share_holding(source, data, needed) * 100) / 100
        if wanted > fraction:
            fraction = min(MAX_AUTO_HOLDOUT, wanted)
            logger.warning(
                "the table is small, so the holdout the evaluation scores against takes %.0f%% of its rows instead "
                "of %.0f%% (set data.holdout_fraction to choose)", 100 * fraction, 100 * data.holdout_share,
            )  # fmt: skip
    return config.model_copy(update={"data": data.model_copy(update={"holdout_fraction": fraction})})


def with_table_batch_size(config: PipelineConfig, training_rows: int) -> PipelineConfig:
    """`training.batch_size` left null becomes one that suits the table: about 16 steps per epoch.

    A fixed 500 gives a 300-row table one gradient step per epoch (30 steps in a default run: the model barely
    learns), and a million-row table 2,000 small steps per epoch. A power of two between `MIN_BATCH` and `MAX_BATCH`
    near training rows / 16 keeps small tables learning and large ones on efficient batches. The bundle records
    the size used.
    """
    if config.training.batch_size is not None:
        return config
    wanted = max(training_rows, 1) / STEPS_PER_EPOCH
    size = int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(wanted, 1))))))
    logger.info("training.batch_size %d for %d training rows (set it to choose)", size, training_rows)
    return config.model_copy(update={"training": config.training.model_copy(update={"batch_size": size})})


def _share_holding(source: TableSource, data: DataConfig, rows: int) -> float:
    """The smallest holdout share whose holdout holds `rows` rows (1.0 when the table has fewer)."""
    smallest = np.empty(0)
    for batch in source.batches(data.batch_rows):
        joined = np.concatenate([smallest, split_uniforms(batch, data.split_seed)])
        smallest = np.partition(joined, rows - 1)[:rows] if len(joined) > rows else joined
    return float(np.nextafter(smallest.max(), 1.0)) if len(smallest) >= rows else 1.0


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

    def __init__(
        self,
        transform_state: dict[str, Any] | None = None,
        data: dict[str, Any] | DataConfig | None = None,
        transform: TableTransform | None = None,
    ) -> None:
        # Ray ships the state (JSON-able) to each actor; an in-process caller hands over its fitted transform.
        self.transform = transform if transform is not None else TableTransform.from_state_dict(transform_state or {})
        self.data = data if isinstance(data, DataConfig) else DataConfig.model_validate(data or {})

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
