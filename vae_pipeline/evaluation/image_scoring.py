"""Scoring a table with an image column: a domain classifier's view of the images, their labels and privacy.

The real side (`image_reference.ImageReference`: a LeNet trained on the real training images, its features of the
training and holdout images, the privacy baseline) is fitted once per evaluation. Each candidate is scored on its
images (Fréchet distance in the classifier's features, precision/recall, density/coverage), on its labels when the
table has one (train-on-synthetic-test-on-real accuracy, and how often the real classifier gives each image the
class it was generated with), and on pixel and feature distances to the training images. Other columns of the
table are scored for their column shapes (`quality`). Pixels are read through the model's own transform, so they
are the [0, 1] values the model saw.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vae_pipeline.config import EvaluationConfig
from vae_pipeline.evaluation import metrics
from vae_pipeline.evaluation.image_metrics import image_composite
from vae_pipeline.evaluation.image_reference import ImageReference
from vae_pipeline.evaluation.report import ImageGallery, ReportInputs
from vae_pipeline.evaluation.sampling import RealSample
from vae_pipeline.transforms.table import TableTransform

CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_CONFIG_FILE = "classifier.json"
GALLERY_IMAGES = 300  # images per sampler handed to the report grid (it shows a few per class)


class ImageScorer:
    """The real side of an image evaluation; see the module docstring."""

    def __init__(self, transform: TableTransform, real: RealSample, settings: EvaluationConfig) -> None:
        self.transform = transform
        self.settings = settings
        image = transform.image_column
        assert image is not None, "the image scorer needs a table with an image column"
        self.image = image
        self.label = transform.label_column
        self.kinds = {name: kind for name, kind in transform.scoring_kinds().items() if kind != "image"}
        self.holdout = _frame(transform.scoring_view(real.holdout), self.kinds)
        self.real_images, self.real_labels = self._images(real.train)
        holdout_images, holdout_labels = self._images(real.holdout)
        self.reference_side = ImageReference.fit(
            self.real_images,
            self.real_labels,
            holdout_images,
            holdout_labels,
            seed=settings.seed,
            n_classes=len(transform.label_classes) if self.label else None,
        )
        self.baseline = self.reference_side.baseline()

    def score(self, table: pa.Table) -> dict[str, Any]:
        images, labels = self._images(table)
        # A row's label is the class it was generated with under a CVAE (its condition) or an augmented run (its
        # quota); a plain model decodes its label from z like any column. Either way the real classifier's agreement
        # with it says whether image and label go together (`conditional_accuracy`).
        scores = self.reference_side.score(images, labels, requested=labels)
        return {
            "image": {key: value for key, value in scores.items() if key != "privacy"},
            "quality": self._quality(table),
            "detection_auc": None,
            "utility": None,
            "privacy": scores["privacy"],
        }

    def composite(self, entry: dict[str, Any]) -> float:
        return image_composite(entry["image"], self.reference_side.reference())

    def reference(self) -> dict[str, Any]:
        scores = self.reference_side.reference()
        return {
            "name": "real training rows",
            "image": {key: value for key, value in scores.items() if key != "privacy"},
            "quality": None,
            "detection_auc": None,
            "utility": None,
            "privacy": scores["privacy"],
        }

    def report_inputs(
        self, results: dict[str, Any], tables: dict[str, pa.Table], latents: dict[str, np.ndarray]
    ) -> ReportInputs:
        samplers = {name: self._images(table.slice(0, GALLERY_IMAGES)) for name, table in tables.items()}
        gallery = ImageGallery(
            real=self.real_images[:GALLERY_IMAGES],
            real_labels=None if self.real_labels is None else self.real_labels[:GALLERY_IMAGES],
            samplers=samplers,
            class_names=[str(value) for value in self.transform.label_classes] if self.label else None,
        )
        synthetic = {name: _frame(self.transform.scoring_view(table), self.kinds) for name, table in tables.items()}
        return ReportInputs(results, self.holdout, synthetic, latents, self.kinds, images=gallery)

    def artifacts(self) -> dict[str, bytes]:
        """The domain classifier the scores were measured with, to reproduce or reuse them."""
        config = json.dumps(self.reference_side.classifier_config(), indent=2, sort_keys=True).encode()
        return {CLASSIFIER_FILE: self.reference_side.classifier_bytes(), CLASSIFIER_CONFIG_FILE: config}

    def _images(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C, H, W) float32 pixels in [0, 1] and the label codes (None without a label)."""
        column = self.transform.columns[self.image]
        pixels = column.transform(table.column(self.image)).reshape(table.num_rows, *self.transform.image_shape())
        labels = self.transform.label_codes(table) if self.label else None
        return pixels, labels

    def _quality(self, table: pa.Table) -> dict[str, Any] | None:
        """Column shapes of the other scored columns (the label's class shares), when there are any."""
        if not self.kinds:
            return None
        return metrics.quality_score(self.holdout, _frame(self.transform.scoring_view(table), self.kinds), self.kinds)


def _frame(view: pa.Table, kinds: dict[str, str]) -> pd.DataFrame:
    """The scored view without the image column (the tabular metrics read numbers and categories)."""
    return view.select(list(kinds)).to_pandas()
