"""The image privacy guard: fresh and smoothed real images pass, copies of training images are refused."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vae_pipeline import executor
from vae_pipeline.config import EvaluationConfig
from vae_pipeline.evaluation import privacy
from vae_pipeline.evaluation.image_reference import ImageReference


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with executor.one_thread():
        yield


@pytest.fixture(scope="module")
def split() -> dict[str, np.ndarray]:
    """Digits in three parts: training images, the holdout, and fresh images neither has seen."""
    images = (load_digits().images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    order = np.random.default_rng(1).permutation(len(images))
    return {"train": images[order[:1000]], "holdout": images[order[1000:1400]], "fresh": images[order[1400:]]}


@pytest.fixture(scope="module")
def reference(split: dict[str, np.ndarray]) -> ImageReference:
    return ImageReference.fit(split["train"], None, split["holdout"], None, seed=0)


def passes(reference: ImageReference, images: np.ndarray) -> tuple[bool, dict[str, float]]:
    scores = reference.score(images)["privacy"]
    settings = EvaluationConfig()
    verdict = privacy.verdict(
        scores, reference.baseline(), privacy_margin=settings.privacy_margin, max_copy_excess=settings.max_copy_excess
    )
    return verdict[0], scores


def smoothed(images: np.ndarray) -> np.ndarray:
    """A 3x3 box blur: what a VAE's mean images look like beside real ones."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    height, width = images.shape[2:]
    windows = [padded[:, :, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.mean(windows, axis=0).astype(np.float32)


def test_fresh_real_images_sit_as_near_the_training_set_as_the_holdout(
    reference: ImageReference, split: dict[str, np.ndarray]
) -> None:
    ok, scores = passes(reference, split["fresh"])

    assert ok
    assert 0.85 < scores["pixel_dcr_ratio"] < 1.2 and 0.85 < scores["feature_dcr_ratio"] < 1.2


def test_smooth_images_are_not_taken_for_copies(reference: ImageReference, split: dict[str, np.ndarray]) -> None:
    # Blurred fresh images sit nearer *every* real image in pixels; compared with the holdout's own distance to
    # the training set they would look like copies (a pixel ratio well below 1). The guard must not say so.
    ok, scores = passes(reference, smoothed(split["fresh"]))

    assert ok, scores
    assert scores["pixel_dcr_ratio"] > 0.9


def test_near_copies_of_training_images_are_refused(reference: ImageReference, split: dict[str, np.ndarray]) -> None:
    noise = np.random.default_rng(0).normal(0, 0.02, split["train"][:300].shape)
    copies = np.clip(split["train"][:300] + noise, 0, 1).astype(np.float32)

    ok, scores = passes(reference, copies)

    assert not ok
    assert scores["pixel_dcr_ratio"] < 0.3
