"""training/prepare.with_evaluable_holdout: a small table's holdout grows so the evaluation can score it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PENGUINS
from vae_pipeline.config import PipelineConfig, parse_config
from vae_pipeline.data import TableSource, open_source
from vae_pipeline.split import Split, split_codes
from vae_pipeline.training.prepare import MAX_AUTO_HOLDOUT, with_evaluable_holdout


def source_of(table: pa.Table, tmp_path: Path) -> tuple[TableSource, PipelineConfig]:
    tmp_path.mkdir(exist_ok=True)
    pq.write_table(table, tmp_path / "t.parquet")
    config = PipelineConfig().with_overrides({"data.input_url": str(tmp_path / "t.parquet")})
    return open_source(config.data), config


def holdout_rows(source: TableSource, config: PipelineConfig) -> int:
    return sum(int((split_codes(b, config.data) == Split.HOLDOUT).sum()) for b in source.batches())


@pytest.mark.parametrize("rows", [120, 200, 344])
def test_a_small_table_gets_a_holdout_the_evaluation_can_score(tmp_path: Path, rows: int) -> None:
    source, config = source_of(pq.read_table(PENGUINS).slice(0, rows), tmp_path)
    adapted = with_evaluable_holdout(config, source)
    assert config.data.holdout_fraction is None
    assert adapted.data.holdout_fraction is not None and 0.1 < adapted.data.holdout_fraction <= MAX_AUTO_HOLDOUT
    assert holdout_rows(source, adapted) >= 40
    assert adapted.training == config.training


def test_repeated_rows_move_together_and_the_share_follows_them(tmp_path: Path) -> None:
    # 60 distinct rows, each 10 times: a holdout share holds whole groups of ten.
    table = pa.table({"x": np.repeat(np.arange(60.0), 10), "c": np.repeat(np.arange(60) % 3, 10)})
    source, config = source_of(table, tmp_path)
    adapted = with_evaluable_holdout(config, source)
    assert holdout_rows(source, adapted) >= 39 and holdout_rows(source, adapted) % 10 == 0


def test_a_large_table_or_a_chosen_share_is_kept(tmp_path: Path) -> None:
    source, config = source_of(pa.concat_tables([pq.read_table(PENGUINS)] * 5), tmp_path)
    assert with_evaluable_holdout(config, source).data.holdout_fraction == 0.1  # recorded, no longer null
    small, _ = source_of(pq.read_table(PENGUINS).slice(0, 120), tmp_path / "small")
    chosen = config.with_overrides({"data.holdout_fraction": 0.05})
    assert with_evaluable_holdout(chosen, small).data.holdout_fraction == 0.05
    # The choice survives the JSON round trip the flow and Ray Jobs put configs through.
    assert with_evaluable_holdout(parse_config(config.to_json()), small).data.holdout_fraction > 0.1
