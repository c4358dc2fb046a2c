"""From table to model inputs: holdout rows never reach the transform or the encoded batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PENGUINS
from vae_pipeline.config import DataConfig, PipelineConfig
from vae_pipeline.data import open_source
from vae_pipeline.split import Split, split_codes
from vae_pipeline.training.prepare import EncodeRows, fit_table_transform, modelled_batches, select_split


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return PipelineConfig(data=DataConfig(input_url=PENGUINS, label_column="species", holdout_fraction=0.2))


def test_modelled_batches_drop_exactly_the_holdout(config: PipelineConfig) -> None:
    table = pq.read_table(PENGUINS)
    codes = split_codes(table, config.data)
    kept = pa.Table.from_batches(list(modelled_batches(open_source(config.data), config.data)))
    assert kept.num_rows == int((codes != Split.HOLDOUT).sum())
    assert kept.equals(table.filter(pa.array(codes != Split.HOLDOUT)))


def test_encode_rows_skips_holdout_and_keeps_split_codes(config: PipelineConfig) -> None:
    transform = fit_table_transform(open_source(config.data), config)
    encode = EncodeRows(transform.state_dict(), config.data.model_dump(mode="json"))
    table = pq.read_table(PENGUINS)
    out = encode(table)
    codes = split_codes(table, config.data)
    assert out["x"].shape == (int((codes != Split.HOLDOUT).sum()), transform.output_dim)
    assert set(np.unique(out["split"])) <= {Split.TRAIN, Split.VALIDATION}
    train = select_split(out, Split.TRAIN)
    assert set(train) == {"x"} and len(train["x"]) == int((codes == Split.TRAIN).sum())


def test_a_batch_of_only_holdout_rows_encodes_to_empty_arrays(config: PipelineConfig) -> None:
    conditional = config.with_overrides({"model.conditional": True})
    transform = fit_table_transform(open_source(conditional.data), conditional)
    encode = EncodeRows(transform.state_dict(), conditional.data.model_dump(mode="json"))
    table = pq.read_table(PENGUINS)
    holdout = table.filter(pa.array(split_codes(table, config.data) == Split.HOLDOUT))
    out = encode(holdout)
    assert out["x"].shape == (0, transform.output_dim)
    assert out["c"].shape == (0, 3)
    assert out["split"].shape == (0,)


def test_training_refuses_a_process_local_model_url(config: PipelineConfig) -> None:
    from vae_pipeline.errors import ConfigError
    from vae_pipeline.training.job import run_training

    with pytest.raises(ConfigError, match="memory://"):
        run_training(config.with_overrides({"model_url": "memory://models/penguins"}))
