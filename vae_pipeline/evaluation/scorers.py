"""How a table is scored, chosen through a registry by the kinds of its columns (not an if/else in the job).

A scorer holds the real side of an evaluation (computed once: the privacy index, a domain classifier's features)
and scores each candidate's generated table against it. `tabular` scores numbers and categories (quality,
detection, utility, DCR: `tabular_scoring.py`); `image` scores a table with an image column through a domain
classifier's features (Fréchet distance, precision/recall, TSTR, pixel and feature privacy: `image_scoring.py`).
The first registered kind a table's columns include picks the scorer, so an image table is scored as images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from vae_pipeline.config import EvaluationConfig
from vae_pipeline.evaluation.image_scoring import ImageScorer
from vae_pipeline.evaluation.report import ReportInputs
from vae_pipeline.evaluation.sampling import RealSample
from vae_pipeline.evaluation.tabular_scoring import TabularScorer
from vae_pipeline.transforms.table import TableTransform


class Scorer(Protocol):
    """The real side of one evaluation, and how a candidate's generated table is scored against it."""

    baseline: dict[str, float]  # what fresh real rows do: the privacy guard's reference

    def score(self, table: pa.Table) -> dict[str, Any]:
        """A candidate's scores: `privacy` (the keys `privacy.verdict` reads) and the kind's own metrics."""

    def composite(self, entry: dict[str, Any]) -> float:
        """One number in [0, 1], higher is better, from a `score` entry: what the ranking sorts by."""

    def reference(self) -> dict[str, Any]:
        """Real training rows scored as if they were synthetic: the ceiling."""

    def report_inputs(
        self, results: dict[str, Any], tables: dict[str, pa.Table], latents: dict[str, np.ndarray]
    ) -> ReportInputs:
        """What the report plots, from the candidates' generated tables."""

    def artifacts(self) -> dict[str, bytes]:
        """Files the report keeps beside report.json (a trained domain classifier), by name."""


ScorerFactory = Callable[[TableTransform, RealSample, EvaluationConfig], Scorer]

# Column kind -> scorer, most specific first: a table with an image column is scored as images.
SCORERS: dict[str, ScorerFactory] = {
    "image": ImageScorer,
    "continuous": TabularScorer,
    "categorical": TabularScorer,
}


def build_scorer(transform: TableTransform, real: RealSample, settings: EvaluationConfig) -> Scorer:
    """The scorer for the kinds of the transform's scored columns."""
    kinds = set(transform.scoring_kinds().values())
    factory = next(factory for kind, factory in SCORERS.items() if kind in kinds)
    return factory(transform, real, settings)
