"""evaluation/metrics.py on small real tables: penguins (data/penguins.csv) and sklearn's bundled wine table."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_wine
from threadpoolctl import threadpool_limits

from tests.unit.evaluation.conftest import PENGUIN_KINDS, split
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import metrics

KINDS = PENGUIN_KINDS


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # HistGradientBoosting's OpenMP threads crawl on a busy machine; tiny tables gain nothing from them.
    with threadpool_limits(limits=1):
        yield


def constant_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: [frame[c].dropna().iloc[0]] * len(frame) for c in frame.columns})


def shuffled_columns(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Each column permuted on its own: the same marginals, no dependence between columns."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: frame[c].to_numpy()[rng.permutation(len(frame))] for c in frame.columns})


def uniform_noise(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Continuous columns uniform over their range, categorical columns uniform over their values."""
    rng = np.random.default_rng(seed)
    out = {}
    for column, kind in KINDS.items():
        values = frame[column].dropna()
        if kind == "continuous":
            out[column] = rng.uniform(values.min(), values.max(), len(frame))
        else:
            out[column] = rng.choice(values.unique(), len(frame))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------ metadata


def test_sdmetrics_metadata_maps_kinds() -> None:
    assert metrics.sdmetrics_metadata({"a": "continuous", "b": "categorical"}) == {
        "columns": {"a": {"sdtype": "numerical"}, "b": {"sdtype": "categorical"}}
    }


def test_sdmetrics_metadata_takes_only_scoring_kinds() -> None:
    # Discrete columns are scored as continuous: the caller passes each column's `scored_as`, never "discrete".
    with pytest.raises(DataError, match=r"column 'a' has kind 'discrete'; use one of \['continuous', 'categorical'\]"):
        metrics.sdmetrics_metadata({"a": "discrete"})


# ------------------------------------------------------------------------------------------------ outside support


def test_outside_support_by_hand() -> None:
    train = pd.DataFrame(
        {
            "binned": [17.5, 22.0, 27.0, None],
            "year": [2007, 2008, 2009, 2007],
            "code": ["a", "b", "a", None],
        }
    )
    synthetic = pd.DataFrame(
        {
            "binned": [17.5, 17.6, None, 27.0],  # 17.6 of 3 non-null values is outside
            "year": [2007.0, 2010.0, 2008.0, 2008.0],  # floats equal to the ints: only 2010 is outside
            "code": ["a", "z", None, None],  # 1 of 2
        }
    )
    expected = {"binned": 1 / 3, "year": 1 / 4, "code": 1 / 2}
    assert metrics.outside_support(train, synthetic, ["binned", "year", "code"]) == pytest.approx(expected)
    arrow = [pa.Table.from_pandas(f).to_pandas(types_mapper=pd.ArrowDtype) for f in (train, synthetic)]
    assert metrics.outside_support(*arrow, ["binned", "year", "code"]) == pytest.approx(expected)
    assert metrics.outside_support(train, synthetic.iloc[:0], ["binned"]) == {"binned": 0.0}  # nothing to check


def test_outside_support_of_real_halves(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    shares = metrics.outside_support(first, second, ["year", "flipper_length_mm", "bill_length_mm"])
    assert shares["year"] == 0.0
    assert 0.0 < shares["flipper_length_mm"] < shares["bill_length_mm"] < 0.5  # 55 values vs 164 in 342 rows
    noisy = second.assign(flipper_length_mm=second["flipper_length_mm"] + 0.1)
    assert metrics.outside_support(first, noisy, ["flipper_length_mm"]) == {"flipper_length_mm": 1.0}


def test_outside_support_names_a_missing_column(penguins: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="the synthetic frame lacks column 'year'"):
        metrics.outside_support(penguins, penguins.drop(columns="year"), ["year"])


# ------------------------------------------------------------------------------------------------ quality


def test_quality_of_disjoint_half_is_high(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    result = metrics.quality_score(first, second, KINDS)
    assert set(result) == {"score", "column_shapes", "column_pair_trends", "per_column"}
    assert set(result["per_column"]) == set(KINDS)
    scores = [result["score"], result["column_shapes"], result["column_pair_trends"], *result["per_column"].values()]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result["score"] > 0.85


def test_quality_shuffled_columns_lose_pair_trends_only(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    honest = metrics.quality_score(first, second, KINDS)
    shuffled = metrics.quality_score(first, shuffled_columns(first, seed=1), KINDS)
    assert shuffled["column_shapes"] == pytest.approx(1.0)  # same values, so the same marginals
    assert shuffled["column_pair_trends"] < honest["column_pair_trends"] - 0.05


def test_quality_of_constant_rows_is_low(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    assert metrics.quality_score(first, constant_rows(second), KINDS)["score"] < 0.4


def test_quality_same_for_arrow_object_and_float_year_dtypes(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    arrow = pa.Table.from_pandas(second).to_pandas(types_mapper=pd.ArrowDtype)
    objects = second.astype(object).assign(year=second["year"].astype("float64"))  # 2007.0 is category "2007"
    expected = metrics.quality_score(first, second, KINDS)
    for other in (arrow, objects):
        assert metrics.quality_score(first, other, KINDS) == expected


# ------------------------------------------------------------------------------------------------ detection


def test_detection_of_disjoint_half_is_near_chance(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    assert metrics.detection_auc(first, second, KINDS, seed=0) < 0.65


@pytest.mark.parametrize("fake", [constant_rows, lambda f: uniform_noise(f, seed=2)], ids=["constant", "noise"])
def test_detection_of_fake_rows_is_high(penguins: pd.DataFrame, fake) -> None:
    first, second = split(penguins, 2)
    assert metrics.detection_auc(first, fake(second), KINDS, seed=0) > 0.9


def test_detection_is_deterministic_and_balances_sides(penguins: pd.DataFrame) -> None:
    first, second = split(penguins, 2)
    big = pd.concat([second] * 3, ignore_index=True)  # subsampled to len(first) rows
    runs = [metrics.detection_auc(first, big, KINDS, seed=4) for _ in range(2)]
    assert runs[0] == runs[1]


def test_detection_handles_more_than_255_categories() -> None:
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"id": [f"r{i}" for i in range(400)], "x": rng.normal(size=400)})
    synthetic = pd.DataFrame({"id": [f"r{i}" for i in rng.integers(0, 400, 400)], "x": rng.normal(size=400)})
    auc = metrics.detection_auc(real, synthetic, {"id": "categorical", "x": "continuous"}, seed=0)
    assert 0.0 <= auc <= 1.0


def test_detection_with_too_few_rows_says_how_many(penguins: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="at least 6 rows per side"):
        metrics.detection_auc(penguins, penguins.head(5), KINDS, seed=0, folds=3)


# ------------------------------------------------------------------------------------------------ utility


def test_utility_predicts_species(penguins: pd.DataFrame) -> None:
    train, test = split(penguins, 2)
    result = metrics.utility(train, test, "species", KINDS, seed=0)
    assert set(result) == {"accuracy", "macro_f1", "balanced_accuracy"}
    assert result["macro_f1"] > 0.9
    shuffled = train.assign(species=np.random.default_rng(1).permutation(train["species"].to_numpy()))
    assert metrics.utility(shuffled, test, "species", KINDS, seed=0)["macro_f1"] < 0.6


def test_utility_on_wine_with_integer_classes() -> None:
    wine = load_wine(as_frame=True).frame
    kinds = {c: "continuous" for c in wine.columns} | {"target": "categorical"}
    train, test = split(wine, 2)
    assert metrics.utility(train, test, "target", kinds, seed=0)["macro_f1"] > 0.85


def test_utility_with_single_class_predicts_it(penguins: pd.DataFrame) -> None:
    train, test = split(penguins, 2)
    adelie = train[train["species"] == "Adelie"]
    result = metrics.utility(adelie, test, "species", KINDS, seed=0)
    assert result["accuracy"] == pytest.approx((test["species"] == "Adelie").mean())
    assert result["balanced_accuracy"] == pytest.approx(1 / 3)  # recall 1 on one class of three


def test_utility_drops_rows_with_null_label(penguins: pd.DataFrame) -> None:
    train, test = split(penguins, 2)
    holed = test.copy()
    holed.loc[:9, "species"] = None
    expected = metrics.utility(train, test.iloc[10:], "species", KINDS, seed=0)
    assert metrics.utility(train, holed, "species", KINDS, seed=0) == expected


@pytest.mark.parametrize("label", ["body_mass_g", "colour"])
def test_utility_label_must_be_categorical_in_kinds(penguins: pd.DataFrame, label: str) -> None:
    with pytest.raises(DataError, match=label):
        metrics.utility(penguins, penguins, label, KINDS, seed=0)


# ------------------------------------------------------------------------------------------------ errors


def test_missing_column_names_it(penguins: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="'island'"):
        metrics.quality_score(penguins, penguins.drop(columns="island"), KINDS)


def test_unknown_kind_and_non_numeric_continuous(penguins: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="'ordinal'"):
        metrics.sdmetrics_metadata({"year": "ordinal"})
    with pytest.raises(DataError, match=r"'species'.*categorical"):
        metrics.detection_auc(penguins, penguins, {"species": "continuous"}, seed=0)


# ------------------------------------------------------------------------------------------------ composite


def test_composite_score_hand_computed() -> None:
    assert metrics.composite_score({"quality": 0.8, "detection_auc": 0.6}) == pytest.approx(0.8)
    assert metrics.composite_score({"quality": 0.8, "detection_auc": 0.6, "macro_f1": 0.5}) == pytest.approx(0.7)
    assert metrics.composite_score({"quality": 1.0, "detection_auc": 0.5}) == 1.0
    assert metrics.composite_score({"quality": 0.0, "detection_auc": 1.0}) == 0.0
    with pytest.raises(DataError, match="detection_auc"):
        metrics.composite_score({"quality": 0.8})


def test_rank_scores_best_first_ties_by_name() -> None:
    scores = {
        "prior": {"quality": 0.7, "detection_auc": 0.9},
        "gmm": {"quality": 0.9, "detection_auc": 0.55},
        "flow": {"quality": 0.9, "detection_auc": 0.45},
        "broken": {"quality": float("nan"), "detection_auc": 0.5},
    }
    assert metrics.rank_scores(scores) == ["flow", "gmm", "prior", "broken"]
