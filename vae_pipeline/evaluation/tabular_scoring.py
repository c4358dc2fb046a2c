"""Scoring a table of numbers and categories: quality, detection, utility and privacy against real rows.

Only modelled columns are scored (ids are fresh and text partly nulled by design), as numbers where the table
stores numbers or dates as text; a discrete column must also keep to the values real rows take
(`outside_support`). The privacy index of the training rows and the real baseline are built once per evaluation.
A table with a label is also scored class by class (`per_class.py`): each class's rows against that class's real
rows, with the privacy guard's verdict per class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vae_pipeline.config import EvaluationConfig
from vae_pipeline.evaluation import metrics, per_class, privacy
from vae_pipeline.evaluation.report import ReportInputs
from vae_pipeline.evaluation.sampling import RealSample
from vae_pipeline.transforms.table import TableTransform


class TabularScorer:
    """The real side of a tabular evaluation: holdout and training frames, their privacy index and baseline."""

    def __init__(self, transform: TableTransform, real: RealSample, settings: EvaluationConfig) -> None:
        self.transform = transform
        self.settings = settings
        self.label = transform.label_column
        self.kinds = transform.scoring_kinds()
        roles = transform.column_kinds()
        self.discrete = [name for name, role in roles.items() if role == "discrete" and name in self.kinds]
        self.holdout = _frame(transform.scoring_view(real.holdout))
        self.train = _frame(transform.scoring_view(real.train))
        self.real_rows = pd.concat([self.train, self.holdout], ignore_index=True)
        self.index = privacy.index_training_rows(self.train, self.kinds)
        self.baseline = privacy.real_baseline(self.index, seed=settings.seed)
        self.classes = self._per_class_scorer()

    def score(self, table: pa.Table) -> dict[str, Any]:
        """The whole-table scores and, with a label, `per_class` with its summary verdict.

        `per_class_privacy_ok` is False when some scored class fails the privacy guard, and
        `per_class_privacy_reason` then names the first such class (smallest first) and why.
        """
        synthetic = self._synthetic(table)
        seed, kinds = self.settings.seed, self.kinds
        entry: dict[str, Any] = {
            "quality": metrics.quality_score(self.holdout, synthetic, kinds),
            "detection_auc": metrics.detection_auc(self.holdout, synthetic, kinds, seed=seed),
            "utility": metrics.utility(synthetic, self.holdout, self.label, kinds, seed=seed) if self.label else None,
            "privacy": privacy.privacy(synthetic, self.index, self.baseline, seed=seed),
            "outside_support": metrics.outside_support(self.real_rows, synthetic, self.discrete),
        }
        if self.classes is not None:
            entry["per_class"] = self.classes.score(synthetic)
            entry["per_class_privacy_ok"], entry["per_class_privacy_reason"] = per_class.summary(entry["per_class"])
        return entry

    def composite(self, entry: dict[str, Any]) -> float:
        flat = {"quality": entry["quality"]["score"], "detection_auc": entry["detection_auc"]}
        if entry.get("utility"):
            flat["macro_f1"] = entry["utility"]["macro_f1"]
        return metrics.composite_score(flat)

    def reference(self) -> dict[str, Any]:
        """Real training rows scored as if they were synthetic: the ceiling.

        Their privacy would be trivially zero, so the privacy reference is the baseline: each training row against
        the other training rows (a DCR ratio of 1 by definition) and the share of them with a twin among the others.
        """
        seed, kinds, label = self.settings.seed, self.kinds, self.label
        return {
            "name": "real training rows",
            "quality": metrics.quality_score(self.holdout, self.train, kinds),
            "detection_auc": metrics.detection_auc(self.holdout, self.train, kinds, seed=seed),
            "utility": metrics.utility(self.train, self.holdout, label, kinds, seed=seed) if label else None,
            "privacy": privacy.real_rows_scores(self.baseline),
        }

    def report_inputs(
        self, results: dict[str, Any], tables: dict[str, pa.Table], latents: dict[str, np.ndarray]
    ) -> ReportInputs:
        synthetic = {name: self._synthetic(table) for name, table in tables.items()}
        return ReportInputs(results=results, real=self.holdout, synthetic=synthetic, latents=latents, kinds=self.kinds)

    def artifacts(self) -> dict[str, bytes]:
        return {}

    def _per_class_scorer(self) -> per_class.PerClassScorer | None:
        """None without a label, or where the label is not scored or is the only scored column."""
        if self.label is None or self.label not in self.kinds or len(self.kinds) < 2:
            return None
        return per_class.PerClassScorer(self.label, self.holdout, self.train, self.kinds, self.settings)

    def _synthetic(self, table: pa.Table) -> pd.DataFrame:
        return _frame(self.transform.scoring_view(table))


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()
