"""evaluation/privacy.py and the privacy guard on real tables, repeated rows included.

The repeated-rows table is Palmer penguins (data/penguins.csv) on five columns (species, island, sex, year and the
flipper length, measured to the millimetre): 46% of its rows equal another row, as in real survey tables.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.unit.evaluation.conftest import PENGUIN_KINDS, split
from vae_pipeline.config import EvaluationConfig
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import privacy
from vae_pipeline.split import Split, assign_splits, position_keys

KINDS = PENGUIN_KINDS
REPEATS = {name: KINDS[name] for name in ("species", "island", "sex", "year", "flipper_length_mm")}


def scores(synthetic: pd.DataFrame, train: pd.DataFrame, kinds: dict[str, str]) -> dict[str, float]:
    index = privacy.index_training_rows(train, kinds)
    return privacy.privacy(synthetic, index, privacy.real_baseline(index), seed=0)


def verdict(synthetic: pd.DataFrame, train: pd.DataFrame, kinds: dict[str, str]) -> tuple[bool, str | None]:
    index = privacy.index_training_rows(train, kinds)
    baseline = privacy.real_baseline(index)
    found = privacy.privacy(synthetic, index, baseline, seed=0)
    settings = EvaluationConfig()
    return privacy.verdict(
        found, baseline, privacy_margin=settings.privacy_margin, max_copy_excess=settings.max_copy_excess
    )


# ----------------------------------------------------------------------------------------------- hand computed


def test_hand_computed_distances_and_baseline() -> None:
    # x scales by median 2.5 and IQR 3.75 - 1.25 = 2.5; c is one-hot over {a, b}, and the unseen "z" is all-zero.
    kinds = {"x": "continuous", "c": "categorical"}
    train = pd.DataFrame({"x": [0.0, 1, 2, 3, 4, 4], "c": ["a", "a", "b", "b", "a", "a"]})
    index = privacy.index_training_rows(train, kinds)
    baseline = privacy.real_baseline(index)
    # Leave-one-out: rows 0..3 are each 1 / 2.5 = 0.4 from their nearest other row ((0, a) and (1, a); (2, b) and
    # (3, b)); (4, a) twice has its twin at 0. Two of six rows have a twin.
    assert baseline["dcr_real_median"] == pytest.approx(0.4)
    assert baseline["exact_copy_share"] == pytest.approx(2 / 6)
    synthetic = pd.DataFrame({"x": [2.5, 0.0, 4.0], "c": ["b", "z", "a"]})
    found = privacy.privacy(synthetic, index, baseline)
    # (2.5, b) is 0.2 from (2, b); (0, z) is 1 from (0, a) (one-hot differs in one place); (4, a) is a copy.
    assert found["dcr_synthetic_median"] == pytest.approx(0.2)
    assert found["dcr_ratio"] == pytest.approx(0.2 / 0.4)
    assert found["exact_copy_share"] == pytest.approx(1 / 3)


def test_a_single_training_row_has_no_neighbour() -> None:
    kinds = {"x": "continuous"}
    index = privacy.index_training_rows(pd.DataFrame({"x": [1.0]}), kinds)
    baseline = privacy.real_baseline(index)
    assert baseline["exact_copy_share"] == 0.0 and baseline["dcr_real_mean"] == 0.0
    copied = privacy.privacy(pd.DataFrame({"x": [1.0]}), index, baseline)
    assert copied["dcr_ratio"] == 1.0 and copied["exact_copy_share"] == 1.0
    assert privacy.privacy(pd.DataFrame({"x": [9.0]}), index, baseline)["dcr_ratio"] == privacy.MAX_DCR_RATIO


def test_where_most_rows_repeat_the_means_compare() -> None:
    kinds = {"c": "categorical", "x": "continuous"}
    # Four of six rows have a twin: the leave-one-out median is 0, the mean is not.
    train = pd.DataFrame({"c": ["a", "a", "b", "b", "a", "b"], "x": [1.0, 1, 2, 2, 3, 5]})
    index = privacy.index_training_rows(train, kinds)
    baseline = privacy.real_baseline(index)
    assert baseline["dcr_real_median"] == 0.0 < baseline["dcr_real_mean"]
    found = privacy.privacy(pd.DataFrame({"c": ["a", "b"], "x": [2.0, 4.0]}), index, baseline)
    # Two synthetic rows: their mean distance is their median.
    assert found["dcr_ratio"] == pytest.approx(found["dcr_synthetic_median"] / baseline["dcr_real_mean"])
    json.dumps(found, allow_nan=False)


def test_ratio_is_one_when_both_medians_are_zero() -> None:
    kinds = {"c": "categorical"}
    train = pd.DataFrame({"c": ["a", "a", "b", "b"]})
    found = scores(pd.DataFrame({"c": ["a", "b"]}), train, kinds)
    assert found["dcr_real_median"] == 0.0 and found["dcr_ratio"] == 1.0


def test_exact_copies_ignore_dtype(penguins: pd.DataFrame) -> None:
    train, _ = split(penguins, 2)
    copied = train.astype(object).assign(year=train["year"].astype("float64"))
    assert scores(copied, train, KINDS)["exact_copy_share"] == 1.0  # rows with nulls count too


def test_subsampling_is_seeded(penguins: pd.DataFrame) -> None:
    train, fresh = split(penguins, 2)
    index = privacy.index_training_rows(train, KINDS)
    baselines = [privacy.real_baseline(index, max_rows=50, seed=9) for _ in range(2)]
    assert baselines[0] == baselines[1] != privacy.real_baseline(index, max_rows=50, seed=10)
    runs = [privacy.privacy(fresh, index, baselines[0], max_rows=50, seed=9) for _ in range(2)]
    assert runs[0] == runs[1]


def test_a_missing_column_is_named(penguins: pd.DataFrame) -> None:
    index = privacy.index_training_rows(penguins, KINDS)
    with pytest.raises(DataError, match="'island'"):
        privacy.privacy(penguins.drop(columns="island"), index, privacy.real_baseline(index))


# ----------------------------------------------------------------------------------------------- the guard


def test_fresh_real_rows_pass_on_a_table_without_repeats(penguins: pd.DataFrame) -> None:
    train, fresh = split(penguins, 2)
    found = scores(fresh, train, KINDS)
    assert 0.6 < found["dcr_ratio"] < 1.6
    assert found["exact_copy_share"] == 0.0
    assert verdict(fresh, train, KINDS) == (True, None)


def test_fresh_real_rows_pass_on_a_table_with_many_repeats(penguins: pd.DataFrame) -> None:
    train, fresh = split(penguins, 2)
    index = privacy.index_training_rows(train, REPEATS)
    baseline = privacy.real_baseline(index)
    found = privacy.privacy(fresh, index, baseline)
    # Fresh rows coincide with training rows about as often as training rows coincide with each other.
    assert baseline["exact_copy_share"] > 0.2 and found["exact_copy_share"] > 0.2
    assert abs(found["exact_copy_share"] - baseline["exact_copy_share"]) < 0.1
    assert verdict(fresh, train, REPEATS) == (True, None)


def test_the_content_split_holdout_could_never_measure_the_natural_rate(penguins: pd.DataFrame) -> None:
    """Why the baseline is not the holdout: the content-hash split keeps every twin of a row in one split."""
    table = pa.Table.from_pandas(penguins[list(REPEATS)], preserve_index=False)
    codes = assign_splits(table, seed=0, validation_fraction=0.0, holdout_fraction=0.3)
    frame = penguins[list(REPEATS)]
    holdout, train = frame[codes == Split.HOLDOUT], frame[codes == Split.TRAIN]
    assert scores(holdout, train, REPEATS)["exact_copy_share"] == 0.0
    assert privacy.real_baseline(privacy.index_training_rows(train, REPEATS))["exact_copy_share"] > 0.2


def test_verbatim_training_rows_are_refused(penguins: pd.DataFrame) -> None:
    train, _ = split(penguins, 2)
    for kinds in (KINDS, REPEATS):
        ok, reason = verdict(train, train, kinds)
        assert not ok and reason is not None


def test_training_rows_with_a_little_noise_are_refused_by_distance(penguins: pd.DataFrame) -> None:
    train, _ = split(penguins, 2)
    jitter = train.copy()
    rng = np.random.default_rng(0)
    for column in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        jitter[column] = jitter[column] + rng.normal(0, 0.02 * jitter[column].std(), len(jitter))
    found = scores(jitter, train, KINDS)
    assert found["exact_copy_share"] < 0.05 and found["dcr_ratio"] < 0.5
    ok, reason = verdict(jitter, train, KINDS)
    assert not ok and reason is not None and "DCR ratio" in reason


def test_position_keys_are_seeded_and_independent_of_batching() -> None:
    whole = position_keys(0, 100, seed=3)
    assert np.array_equal(np.concatenate([position_keys(0, 40, 3), position_keys(40, 60, 3)]), whole)
    assert not np.array_equal(whole, position_keys(0, 100, seed=4))
    assert len(np.unique(whole)) == 100


def test_real_rows_are_scored_as_the_baseline(penguins: pd.DataFrame) -> None:
    index = privacy.index_training_rows(penguins, KINDS)
    baseline = privacy.real_baseline(index)
    scores = privacy.real_rows_scores(baseline)
    assert scores["dcr_ratio"] == 1.0 and scores["dcr_synthetic_median"] == baseline["dcr_real_median"]
    assert scores["exact_copy_share"] == baseline["exact_copy_share"]
