"""Per-class scores: each class's synthetic rows against that class's real rows.

The whole-table scores average over classes, so a minority class can be modelled badly, or its few training rows
replayed, while the table as a whole looks fine: ten copied rows among 2,000 are half a percent, under the guard's
copy limit. Here each class is scored on its own. Quality and detection compare the class's synthetic rows with its
holdout rows; privacy compares them with its training rows, beside a real baseline measured the way
`privacy.real_baseline` measures it for the whole table (leave-one-out, here among the class's training rows), and
`privacy.verdict` judges each class. The label is constant within a class, so it is left out of the scored columns.

Only synthetic rows are judged: the real rows an augmented dataset adds are never counted as copies. Rows with a
null label belong to no class. A class with fewer than `evaluation.min_class_rows` holdout or training rows is not
scored but named in a warning: too few rows to model or to judge.

Small classes make noisy figures, and two guards take that into account. The DCR ratio of a class compares two
medians of a few dozen distances, which vary by chance far more than the whole table's: fresh real penguin rows of a
class (a few dozen rows a side) range from 0.65 to 1.36. So each class's margin is widened to three standard errors of
that ratio (`class_margin`), and never below `evaluation.privacy_margin`; exact copies keep `privacy.verdict`'s own
allowance for chance. Detection is scored only with `DETECTION_MIN_ROWS` rows a side: with fewer, a training fold
cannot fill two of HistGradientBoosting's 20-row leaves, no split is made and every class would score 0.5.

Cost: the evaluation scores about ten candidates, so at most `MAX_CLASSES` classes are scored, the smallest by
training rows (minority classes are where the whole-table scores hide problems and where a generator is most tempted
to replay rows; the larger ones carry the whole-table scores); detection runs on at most `DETECTION_ROWS` rows a
side. The privacy index and baseline of each class are built once per evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vae_pipeline.config import EvaluationConfig
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import metrics, privacy

MAX_CLASSES = 20  # classes scored per candidate, the smallest first
# sdmetrics' pair trends grow with the square of the columns: on a 64-column table (digits) per-class quality made
# the evaluation 20x slower, so wider tables get per-class detection and privacy, and whole-table quality only.
MAX_QUALITY_COLUMNS = 24
DETECTION_ROWS = 250  # rows a side in a class's detection test
DETECTION_MIN_ROWS = 30  # 3 folds: 40 training rows, two 20-row leaves (HistGradientBoosting's min_samples_leaf)
MEDIAN_SPREAD = 1.44  # relative standard error of a median of exponential distances, times sqrt(n): 1 / ln 2
DETECTION_FOLDS = 3


@dataclass(frozen=True)
class ClassRows:
    """One class's real rows and, when it is scored, the privacy index and baseline of its training rows."""

    holdout: pd.DataFrame
    train: pd.DataFrame
    index: privacy.TrainingIndex | None = None
    baseline: dict[str, float] | None = None


class PerClassScorer:
    """The real side of the per-class scores: each class's holdout and training rows, indexed once.

    Args:
        label: the label column, categorical in `kinds`.
        holdout: the real holdout rows (`TableTransform.scoring_view` frames, as `TabularScorer` holds them).
        train: the real training rows, in the same form.
        kinds: column -> "continuous" | "categorical", the label included.
        settings: `min_class_rows`, the guard's `privacy_margin` and `max_copy_excess`, and the seed.
    """

    def __init__(
        self,
        label: str,
        holdout: pd.DataFrame,
        train: pd.DataFrame,
        kinds: dict[str, str],
        settings: EvaluationConfig,
    ) -> None:
        self.label, self.settings = label, settings
        self.kinds = {column: kind for column, kind in kinds.items() if column != label}
        if label not in kinds or not self.kinds:
            raise DataError(f"per-class scores need the label {label!r} and another column in kinds; got {kinds}")
        by_holdout, by_train = split_by_class(holdout, label), split_by_class(train, label)
        names = sorted(set(by_holdout) | set(by_train), key=lambda name: (len(by_train.get(name, ())), name))
        empty = train.iloc[:0]
        self.classes = {name: ClassRows(by_holdout.get(name, empty), by_train.get(name, empty)) for name in names}
        large = [name for name, rows in self.classes.items() if self._large_enough(rows)]
        for name in large[:MAX_CLASSES]:
            rows = self.classes[name]
            index = privacy.index_training_rows(rows.train, self.kinds)
            baseline = privacy.real_baseline(index, seed=settings.seed)
            self.classes[name] = ClassRows(rows.holdout, rows.train, index, baseline)

    def score(self, synthetic: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """Every real class, smallest first: its row counts, scores or None, verdict or None, and a warning or None."""
        by_class = split_by_class(synthetic, self.label)
        empty = synthetic.iloc[:0]
        return {name: self._score_class(name, rows, by_class.get(name, empty)) for name, rows in self.classes.items()}

    def _large_enough(self, rows: ClassRows) -> bool:
        return min(len(rows.holdout), len(rows.train)) >= self.settings.min_class_rows

    def _score_class(self, name: str, rows: ClassRows, synthetic: pd.DataFrame) -> dict[str, Any]:
        counts = {"holdout": len(rows.holdout), "train": len(rows.train), "synthetic": len(synthetic)}
        entry: dict[str, Any] = {"rows": counts, "quality": None, "detection_auc": None, "privacy": None,
                                 "privacy_ok": None, "privacy_reason": None, "warning": None}  # fmt: skip
        if rows.index is None or rows.baseline is None:
            entry["warning"] = self._unscored_warning(name, rows, counts)
            return entry
        if not len(synthetic):
            entry["warning"] = f"class {name!r}: the sampler generated no rows of it, so it cannot be judged"
            return entry
        seed, settings = self.settings.seed, self.settings
        entry["privacy"] = privacy.privacy(synthetic, rows.index, rows.baseline, seed=seed)
        entry["privacy_ok"], entry["privacy_reason"] = privacy.verdict(
            entry["privacy"],
            rows.baseline,
            privacy_margin=class_margin(settings.privacy_margin, entry["privacy"]["rows"], int(rows.baseline["rows"])),
            max_copy_excess=settings.max_copy_excess,
        )
        if len(synthetic) < settings.min_class_rows:
            entry["warning"] = (
                f"class {name!r} has only {len(synthetic)} synthetic rows, fewer than evaluation.min_class_rows "
                f"({settings.min_class_rows}): its privacy is judged, its quality and detection are not scored"
            )
            return entry
        if len(self.kinds) <= MAX_QUALITY_COLUMNS:
            entry["quality"] = metrics.quality_score(rows.holdout, synthetic, self.kinds)
        entry["detection_auc"] = self._detection(rows.holdout, synthetic)
        return entry

    def _detection(self, holdout: pd.DataFrame, synthetic: pd.DataFrame) -> float | None:
        """Detection AUC on at most DETECTION_ROWS rows a side (seeded); None under DETECTION_MIN_ROWS a side."""
        if min(len(holdout), len(synthetic)) < DETECTION_MIN_ROWS:
            return None
        seeds = np.random.SeedSequence(self.settings.seed).spawn(2)
        real = metrics.subsample(holdout, DETECTION_ROWS, np.random.default_rng(seeds[0]))
        fake = metrics.subsample(synthetic, DETECTION_ROWS, np.random.default_rng(seeds[1]))
        return metrics.detection_auc(real, fake, self.kinds, seed=self.settings.seed, folds=DETECTION_FOLDS)

    def _unscored_warning(self, name: str, rows: ClassRows, counts: dict[str, int]) -> str:
        found = f"{counts['holdout']} holdout, {counts['train']} training and {counts['synthetic']} synthetic rows"
        if not self._large_enough(rows):
            return (
                f"class {name!r} has {found}, fewer than evaluation.min_class_rows ({self.settings.min_class_rows}) "
                "real rows: too few to model or to judge, so it is not scored and augmentation of it is a guess"
            )
        return (
            f"class {name!r} ({found}) is not scored per class: only the {MAX_CLASSES} smallest classes with "
            "enough rows are; the whole-table scores cover it"
        )


def split_by_class(frame: pd.DataFrame, label: str) -> dict[str, pd.DataFrame]:
    """The rows of `frame` per label value, keyed by its canonical text (`metrics.normalise`); null labels dropped."""
    values = metrics.normalise(frame, {label: "categorical"}, "labelled")[label].to_numpy()
    frame = frame.reset_index(drop=True)
    present = ~pd.isna(values)
    groups = frame[present].groupby(values[present], sort=True)
    return {str(name): part.reset_index(drop=True) for name, part in groups}


def class_margin(privacy_margin: float, synthetic_rows: int, real_rows: int) -> float:
    """The DCR-ratio margin for one class: `privacy_margin`, or three standard errors of the ratio where wider.

    A median of n distances to the nearest row varies by about `MEDIAN_SPREAD` / sqrt(n) of itself where the
    distances fall off like an exponential (more concentrated ones, as on tables of several columns, vary less), so
    the log of the ratio of two independent medians varies by about MEDIAN_SPREAD * sqrt(1/n_s + 1/n_r). Three of
    those on 45 rows a side allow ratios down to 0.40; rows replayed or barely perturbed sit near 0 and still fail.
    """
    spread = MEDIAN_SPREAD * math.sqrt(1 / max(synthetic_rows, 1) + 1 / max(real_rows, 1))
    return max(privacy_margin, 1 - math.exp(-3 * spread))


def summary(per_class: dict[str, dict[str, Any]]) -> tuple[bool, str | None]:
    """(False, the first failing class and its reason) when a scored class fails its verdict, else (True, None).

    A table where no class could be scored passes here: the whole-table guard still judges it, and the per-class
    warnings say which classes went unjudged.
    """
    for name, scores in per_class.items():
        if scores["privacy_ok"] is False:
            return False, f"class {name!r}: {scores['privacy_reason']}"
    return True, None
