"""evaluation/per_class.py: each class's synthetic rows against that class's real rows, on Palmer penguins.

Species is the label: Adelie 152 rows, Gentoo 124, Chinstrap 68 (the minority). Synthetic frames are made by hand:
fresh real rows (a part the scorer never saw), training rows copied, and classes cut down to a few rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from threadpoolctl import threadpool_limits

from tests.unit.evaluation.conftest import PENGUIN_KINDS, split
from vae_pipeline.config import DataConfig, EvaluationConfig
from vae_pipeline.evaluation import per_class, privacy, report
from vae_pipeline.evaluation.sampling import RealSample
from vae_pipeline.evaluation.tabular_scoring import TabularScorer
from vae_pipeline.transforms.table import TableTransform

LABEL = "species"
SETTINGS = EvaluationConfig()
ENTRY_KEYS = {"rows", "quality", "detection_auc", "privacy", "privacy_ok", "privacy_reason", "warning"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):  # as the evaluation job runs them: far faster on a busy machine
        yield


@pytest.fixture(scope="module")
def parts(penguins: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training, holdout and fresh rows: three disjoint random thirds (about 23 Chinstrap rows each)."""
    train, holdout, fresh = split(penguins, 3)
    return train, holdout, fresh


def of_class(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame[LABEL] == name].reset_index(drop=True)


def test_copied_minority_fails_per_class_while_the_whole_table_passes(
    parts: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    # Many fresh majority rows and ten Chinstrap training rows replayed: 10 of ~1,000 rows copy, under the 1% limit.
    train, holdout, fresh = parts
    majority = pd.concat([fresh[fresh[LABEL] != "Chinstrap"]] * 12, ignore_index=True)
    copies = of_class(train, "Chinstrap").iloc[:10]
    synthetic = pd.concat([majority, copies], ignore_index=True)
    assert len(copies) / len(synthetic) < SETTINGS.max_copy_excess

    index = privacy.index_training_rows(train, PENGUIN_KINDS)
    baseline = privacy.real_baseline(index)
    whole = privacy.privacy(synthetic, index, baseline)
    margins = {"privacy_margin": SETTINGS.privacy_margin, "max_copy_excess": SETTINGS.max_copy_excess}
    ok, _ = privacy.verdict(whole, baseline, **margins)
    assert ok

    found = per_class.PerClassScorer(LABEL, holdout, train, PENGUIN_KINDS, SETTINGS).score(synthetic)
    chinstrap = found["Chinstrap"]
    assert chinstrap["privacy_ok"] is False
    assert chinstrap["privacy"]["exact_copy_share"] == 1.0
    assert chinstrap["privacy"]["dcr_ratio"] == 0.0
    assert "closer to training rows" in chinstrap["privacy_reason"]
    assert found["Adelie"]["privacy_ok"] and found["Gentoo"]["privacy_ok"]
    assert per_class.summary(found) == (False, f"class 'Chinstrap': {chinstrap['privacy_reason']}")


def test_fresh_real_rows_pass_every_class(parts: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    train, holdout, fresh = parts
    found = per_class.PerClassScorer(LABEL, holdout, train, PENGUIN_KINDS, SETTINGS).score(fresh)
    assert list(found) == ["Chinstrap", "Gentoo", "Adelie"]  # smallest first, by training rows
    for name, scores in found.items():
        assert scores["privacy_ok"] is True, (name, scores["privacy_reason"])
        assert scores["privacy"]["exact_copy_share"] == 0.0
        assert scores["quality"]["score"] > 0.6  # a few dozen rows a side: column shapes are coarse
        if min(scores["rows"]["holdout"], scores["rows"]["synthetic"]) >= per_class.DETECTION_MIN_ROWS:
            assert scores["detection_auc"] < 0.7  # fresh rows of a class are hard to tell from its holdout rows
        else:  # too few rows for the classifier to split: it would say 0.5 whatever the rows
            assert scores["detection_auc"] is None
        assert scores["warning"] is None
        assert scores["rows"]["synthetic"] == len(of_class(fresh, name))
    assert per_class.summary(found) == (True, None)


def test_near_copies_of_a_class_fail_despite_its_wider_margin(
    parts: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    # Chinstrap training rows nudged by 1% of each measurement's spread: no exact copy, but far closer than real.
    train, holdout, fresh = parts
    nudged = of_class(train, "Chinstrap")
    rng = np.random.default_rng(0)
    for column in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        nudged[column] += rng.normal(0, 0.01 * nudged[column].std(), len(nudged))
    synthetic = pd.concat([fresh[fresh[LABEL] != "Chinstrap"], nudged], ignore_index=True)
    found = per_class.PerClassScorer(LABEL, holdout, train, PENGUIN_KINDS, SETTINGS).score(synthetic)
    chinstrap = found["Chinstrap"]
    assert chinstrap["privacy"]["exact_copy_share"] < 0.1  # only rows with no measurement to nudge stay copies
    assert chinstrap["privacy_ok"] is False and chinstrap["privacy"]["dcr_ratio"] < 0.1


@pytest.mark.parametrize(
    ("rows", "expected"),
    [(10_000, 0.1), (45, 1 - math.exp(-3 * 1.44 * math.sqrt(2 / 45)))],  # the configured margin; three spreads
)
def test_class_margin(rows: int, expected: float) -> None:
    assert per_class.class_margin(0.1, rows, rows) == pytest.approx(expected)


def test_a_class_of_three_rows_is_named_and_not_scored(
    parts: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    train, holdout, fresh = parts
    few = [pd.concat([f[f[LABEL] != "Chinstrap"], of_class(f, "Chinstrap").iloc[:3]]) for f in (train, holdout)]
    found = per_class.PerClassScorer(LABEL, few[1], few[0], PENGUIN_KINDS, SETTINGS).score(fresh)
    chinstrap = found["Chinstrap"]
    synthetic_rows = len(of_class(fresh, "Chinstrap"))
    assert chinstrap["rows"] == {"holdout": 3, "train": 3, "synthetic": synthetic_rows}
    assert (chinstrap["quality"], chinstrap["detection_auc"], chinstrap["privacy"]) == (None, None, None)
    assert (chinstrap["privacy_ok"], chinstrap["privacy_reason"]) == (None, None)
    counts = f"3 holdout, 3 training and {synthetic_rows} synthetic rows"
    assert chinstrap["warning"].startswith(f"class 'Chinstrap' has {counts}")
    assert "too few to model or to judge" in chinstrap["warning"]
    assert "augmentation of it is a guess" in chinstrap["warning"]
    assert found["Adelie"]["warning"] is None and found["Adelie"]["quality"] is not None
    assert per_class.summary(found) == (True, None)  # an unjudged class is warned about, not failed


def test_classes_beyond_the_cap_are_listed_not_scored(
    parts: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, holdout, fresh = parts
    monkeypatch.setattr(per_class, "MAX_CLASSES", 2)
    found = per_class.PerClassScorer(LABEL, holdout, train, PENGUIN_KINDS, SETTINGS).score(fresh)
    assert [name for name, scores in found.items() if scores["privacy"] is not None] == ["Chinstrap", "Gentoo"]
    assert "only the 2 smallest classes" in found["Adelie"]["warning"]


def test_few_or_no_synthetic_rows_of_a_class(parts: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    train, holdout, fresh = parts
    synthetic = pd.concat([of_class(fresh, "Adelie"), of_class(train, "Gentoo").iloc[:4]], ignore_index=True)
    found = per_class.PerClassScorer(LABEL, holdout, train, PENGUIN_KINDS, SETTINGS).score(synthetic)
    assert found["Chinstrap"]["privacy_ok"] is None
    assert "generated no rows" in found["Chinstrap"]["warning"]
    gentoo = found["Gentoo"]  # four copies: too few for quality, never too few for the guard
    assert gentoo["privacy_ok"] is False and gentoo["quality"] is None
    assert "only 4 synthetic rows" in gentoo["warning"]
    assert per_class.summary(found)[1].startswith("class 'Gentoo'")


def test_json_shape_and_the_scorer_entry(penguins: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(penguins, preserve_index=False)
    config = DataConfig(input_url="x", label_column=LABEL)
    transform = TableTransform.fit(table.to_batches(max_chunksize=128), table.schema, config)
    train, holdout, fresh = (pa.Table.from_pandas(p, preserve_index=False) for p in split(penguins, 3))
    scorer = TabularScorer(transform, RealSample(holdout=holdout, train=train, holdout_total=len(holdout)), SETTINGS)
    entry = scorer.score(fresh)
    assert {"quality", "detection_auc", "utility", "privacy", "outside_support"} < set(entry)
    assert (entry["per_class_privacy_ok"], entry["per_class_privacy_reason"]) == (True, None)
    found = json.loads(json.dumps(entry["per_class"], allow_nan=False))
    assert found == entry["per_class"]
    assert set(found) == {"Adelie", "Chinstrap", "Gentoo"}
    for scores in found.values():
        assert set(scores) == ENTRY_KEYS
        assert set(scores["rows"]) == {"holdout", "train", "synthetic"}
        assert set(scores["privacy"]) == set(entry["privacy"])
        assert set(scores["quality"]) == set(entry["quality"])
        assert LABEL not in scores["quality"]["per_column"]  # constant within a class: not scored


def test_no_per_class_key_without_a_label(penguins: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(penguins, preserve_index=False)
    transform = TableTransform.fit(table.to_batches(max_chunksize=128), table.schema, DataConfig(input_url="x"))
    train, holdout = (pa.Table.from_pandas(p, preserve_index=False) for p in split(penguins, 2))
    scorer = TabularScorer(transform, RealSample(holdout=holdout, train=train, holdout_total=len(holdout)), SETTINGS)
    assert scorer.classes is None


def test_report_shows_the_chosen_and_the_best_refused_sampler_per_class() -> None:
    def scores(ok: bool | None, warning: str | None = None) -> dict[str, Any]:
        judged = ok is not None
        return {"rows": {"holdout": 23, "train": 22, "synthetic": 40 if judged else 0},
                "quality": {"score": 0.81} if judged else None, "detection_auc": 0.61 if judged else None,
                "privacy": {"dcr_ratio": 1.02 if ok else 0.0} if judged else None, "privacy_ok": ok,
                "privacy_reason": None if ok in (True, None) else "copies", "warning": warning}  # fmt: skip

    def entry(name: str, ok: bool, classes: dict[str, Any]) -> dict[str, Any]:
        passes = all(c["privacy_ok"] is not False for c in classes.values())
        return {"name": name, "privacy_ok": ok, "privacy_reason": None, "per_class": classes,
                "per_class_privacy_ok": passes}  # fmt: skip

    warned = "class 'Rare' has 3 holdout, 2 training and 0 synthetic rows: too few"
    samplers = [
        entry("gmm", True, {"Rare": scores(None, warned), "Chinstrap": scores(True)}),
        entry("empirical", True, {"Rare": scores(None, warned), "Chinstrap": scores(False)}),
        entry("prior", True, {"Chinstrap": scores(True)}),
    ]
    section = per_class_markdown({"samplers": samplers, "choice": {"name": "gmm"}, "label_column": LABEL})
    assert "### `gmm` (chosen)" in section and "### `empirical` (best refused)" in section
    assert "`prior`" not in section
    assert "| `Chinstrap` | 23 / 22 / 40 | 0.810 | 0.610 | 1.020 | yes |" in section
    assert "| `Chinstrap` | 23 / 22 / 40 | 0.810 | 0.610 | 0.000 | **no**: copies |" in section
    assert f"- {warned}" in section
    assert "Per class" not in per_class_markdown({"samplers": [{"name": "gmm", "privacy_ok": True}], "choice": None})


def per_class_markdown(results: dict[str, Any]) -> str:
    """The per-class section of report.md (the rest of the report needs results this test does not build)."""
    return "\n".join(report._per_class_section(results))
