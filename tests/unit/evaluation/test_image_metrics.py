"""evaluation/image_metrics.py: metrics on known inputs, the reference on real digits, and the privacy guard on images.

The real data is scikit-learn's 8x8 digits (1,797 images, values 0..16 scaled to [0, 1]), split 1,400 / 397.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from vae_pipeline import executor
from vae_pipeline.config import EvaluationConfig
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import privacy
from vae_pipeline.evaluation.image_classifier import (
    FEATURE_DIM,
    ClassifierConfig,
    ImageClassifier,
    load_classifier,
    train_classifier,
)
from vae_pipeline.evaluation.image_metrics import (
    dcr_ratio,
    density_coverage,
    frechet_distance,
    image_composite,
    image_hashes,
    knn_radii,
    nearest_distances,
    precision_recall,
)
from vae_pipeline.evaluation.image_reference import ImageReference

SCORE_KEYS = {"frechet_distance", "precision", "recall", "density", "coverage", "tstr_accuracy",
              "conditional_accuracy", "images", "privacy"}  # fmt: skip
PRIVACY_KEYS = {"dcr_synthetic_median", "dcr_synthetic_p05", "dcr_real_median", "dcr_real_p05", "dcr_ratio",
                "exact_copy_share", "rows", "pixel_dcr_ratio", "feature_dcr_ratio"}  # fmt: skip


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(images))
    train, holdout = order[:1400], order[1400:]
    labels = digits.target.astype(np.int64)
    return images[train], labels[train], images[holdout], labels[holdout]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """As the evaluation job runs it: one torch thread (two threads on two shared cores run ten times slower)."""
    with executor.one_thread():
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _digits()


@pytest.fixture(scope="module")
def labelled(digits: tuple[np.ndarray, ...]) -> ImageReference:
    return ImageReference.fit(*digits, seed=0)


@pytest.fixture(scope="module")
def unlabelled(digits: tuple[np.ndarray, ...]) -> ImageReference:
    train, _, holdout, _ = digits
    return ImageReference.fit(train, None, holdout, None, seed=0)


def _verdict(scores: dict[str, float], baseline: dict[str, float]) -> tuple[bool, str | None]:
    settings = EvaluationConfig()
    return privacy.verdict(
        scores, baseline, privacy_margin=settings.privacy_margin, max_copy_excess=settings.max_copy_excess
    )


# --- Metrics on known inputs -------------------------------------------------------------------------------------


def test_frechet_distance_closed_forms() -> None:
    a = np.random.default_rng(0).normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)  # |Δμ|², equal Σ
    # b = s·a: μb = sμa, Σb = s²Σa and (ΣaΣb)^½ = sΣa, so d² = (1 - s)² (|μa|² + tr Σa).
    s = 3.0
    expected = (1 - s) ** 2 * (float(a.mean(0) @ a.mean(0)) + np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, s * a) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_singular_covariance() -> None:
    a = np.random.default_rng(1).normal(size=(50, 4))
    a[:, 2] = 0.0  # a dead ReLU unit: zero variance
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, abs=1e-4)
    wide = np.random.default_rng(2).normal(size=(10, 30))  # fewer points than dimensions
    assert np.isfinite(frechet_distance(wide, wide[::-1] + 0.5))
    with pytest.raises(DataError, match="n >= 2"):
        frechet_distance(a[:1], a)


def test_precision_recall_density_coverage_by_hand() -> None:
    real = np.arange(5.0)[:, None]  # 0..4, each point's nearest other point at distance 1
    fake = np.array([[0.5], [10.0]])  # fake radii (k=1): 9.5
    assert knn_radii(real, 1).tolist() == [1.0] * 5
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)  # 0.5 lies in 0's ball; every real point in 0.5's
    assert density_coverage(real, fake, k=1) == (1.0, 0.4)  # 0.5 lies in the balls of 0 and 1: 2 hits / (1 * 2)
    with pytest.raises(DataError, match="more than k=3"):
        knn_radii(real[:3], 3)


def test_identical_sets_score_perfectly_and_disjoint_sets_zero() -> None:
    x = np.random.default_rng(3).normal(size=(300, 8))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert density_coverage(x, x) == (1.0, 1.0)  # open balls hold the point itself and k - 1 neighbours
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    assert density_coverage(x, x + 100.0) == (0.0, 0.0)


def test_nearest_distances_and_hashes() -> None:
    rng = np.random.default_rng(4)
    reference = (rng.integers(0, 256, (40, 1, 8, 8)) / 255).astype(np.float32)
    queries = np.concatenate([reference[:3], rng.random((5, 1, 8, 8)).astype(np.float32)])
    found = nearest_distances(queries, reference)
    brute = np.linalg.norm(queries.reshape(8, 1, -1) - reference.reshape(1, 40, -1), axis=2).min(axis=1)
    assert found[:3].tolist() == [0.0, 0.0, 0.0]  # exact zero for copies, not float32 round-off
    np.testing.assert_allclose(found, brute, rtol=1e-6)
    nudged = reference[:2] + np.float32(0.001)  # below half a uint8 step: the same 8-bit image
    assert image_hashes(nudged).tolist() == image_hashes(reference[:2]).tolist()
    assert len(set(image_hashes(reference).tolist())) == 40


@pytest.mark.parametrize(
    ("synthetic", "real", "expected"),
    [([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], 2.0), ([1.0, 1.0, 4.0], [0.0, 0.0, 3.0], 2.0), ([0.0], [0.0, 0.0], 1.0),
     ([0.5], [0.0, 0.0], 100.0)],
)  # fmt: skip
def test_dcr_ratio_medians_then_means(synthetic: list[float], real: list[float], expected: float) -> None:
    assert dcr_ratio(np.array(synthetic), np.array(real)) == pytest.approx(expected)


def test_image_composite_is_monotone_and_bounded() -> None:
    reference = {"frechet_floor": 2.0, "tstr_accuracy": 0.9}
    score = {"frechet_distance": 4.0, "precision": 0.6, "recall": 0.4, "tstr_accuracy": 0.45}
    assert image_composite(score, reference) == pytest.approx((0.5 + 0.6 + 0.4 + 0.5) / 4)
    assert image_composite({**score, "precision": 0.8}, reference) > image_composite(score, reference)
    assert image_composite({**score, "frechet_distance": 3.0}, reference) > image_composite(score, reference)
    perfect = {"frechet_distance": 1.0, "precision": 1.0, "recall": 1.0, "tstr_accuracy": 0.95}
    assert image_composite(perfect, reference) == 1.0
    assert image_composite({**score, "tstr_accuracy": None}, reference) == pytest.approx(0.5)


# --- The classifier ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 28), (4, 64, 48)])
def test_classifier_takes_any_shape_from_8_to_64(shape: tuple[int, int, int]) -> None:
    model = ImageClassifier(ClassifierConfig(*shape, outputs=5, task="label"))
    x = torch.zeros(2, *shape)
    assert model(x).shape == (2, 5)
    assert model.features(x).shape == (2, FEATURE_DIM)


def test_training_is_seeded_and_leaves_the_global_rng_alone(digits: tuple[np.ndarray, ...]) -> None:
    train, labels = digits[0][:200], digits[1][:200]
    config = ClassifierConfig(1, 8, 8, outputs=10, task="label")
    state = torch.get_rng_state()
    first = train_classifier(train, labels, config, seed=5, epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    second = train_classifier(train, labels, config, seed=5, epochs=1)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    pretext = train_classifier(train, None, ClassifierConfig(1, 8, 8, outputs=4, task="pretext"), seed=5, epochs=1)
    assert pretext(torch.from_numpy(train[:3])).shape == (3, 4)


def test_classifier_round_trips_through_safetensors(labelled: ImageReference, digits: tuple[np.ndarray, ...]) -> None:
    data, config = labelled.classifier_bytes(), labelled.classifier_config()
    assert config == {"channels": 1, "height": 8, "width": 8, "outputs": 10, "task": "label"}
    rebuilt = load_classifier(data, config)
    x = torch.from_numpy(digits[2][:16])
    with torch.no_grad():
        assert torch.equal(rebuilt(x), labelled.classifier(x))


# --- The reference on digits -------------------------------------------------------------------------------------


def test_reference_scores_the_training_images(labelled: ImageReference) -> None:
    reference = labelled.reference()
    assert set(reference) == SCORE_KEYS | {"frechet_floor"}
    assert set(reference["privacy"]) == PRIVACY_KEYS | {"dcr_real_mean"}
    assert reference["frechet_floor"] == reference["frechet_distance"] > 0
    assert reference["tstr_accuracy"] == reference["conditional_accuracy"] > 0.85  # train on real, test on real
    assert 0.8 < reference["precision"] <= 1 and 0.8 < reference["recall"] <= 1
    assert reference["privacy"]["dcr_ratio"] == 1.0 and reference["images"] == 1400
    assert set(labelled.baseline()) == {"exact_copy_share", "rows", "dcr_real_median", "dcr_real_p05", "dcr_real_mean"}


def test_fresh_real_images_score_like_the_holdout_and_pass(
    labelled: ImageReference, digits: tuple[np.ndarray, ...]
) -> None:
    holdout, labels = digits[2], digits[3]
    scores = labelled.score(holdout, labels, requested=labels)
    assert set(scores) == SCORE_KEYS and set(scores["privacy"]) == PRIVACY_KEYS
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    assert scores["conditional_accuracy"] == labelled.reference()["conditional_accuracy"]
    assert 0.7 < scores["tstr_accuracy"] <= 1.0  # trained on 397 images instead of 1,400
    # Half of them are the fresh real images the ratio searches, so they sit far nearer those than training images.
    assert scores["privacy"]["dcr_ratio"] > 1.0 and scores["privacy"]["exact_copy_share"] == 0.0
    assert _verdict(scores["privacy"], labelled.baseline()) == (True, None)
    assert image_composite(scores, labelled.reference()) > 0.9


def test_copies_of_training_images_are_refused(labelled: ImageReference, digits: tuple[np.ndarray, ...]) -> None:
    train = digits[0][:400]
    noisy = np.clip(train + np.random.default_rng(0).normal(0, 0.01, train.shape), 0, 1).astype(np.float32)
    near = labelled.score(noisy)["privacy"]
    assert near["pixel_dcr_ratio"] < 0.2 and near["feature_dcr_ratio"] < 0.5
    assert near["dcr_ratio"] == min(near["pixel_dcr_ratio"], near["feature_dcr_ratio"])
    passes, reason = _verdict(near, labelled.baseline())
    assert not passes and reason is not None and "closer to training rows" in reason
    exact = labelled.score(train)["privacy"]
    assert exact["exact_copy_share"] == 1.0 and exact["dcr_synthetic_median"] == 0.0
    assert not _verdict(exact, labelled.baseline())[0]


def test_noise_scores_badly(labelled: ImageReference, digits: tuple[np.ndarray, ...]) -> None:
    noise = np.random.default_rng(0).random((300, 1, 8, 8)).astype(np.float32)
    scores = labelled.score(noise, np.zeros(300, dtype=np.int64))
    assert scores["frechet_distance"] > 10 * labelled.reference()["frechet_floor"]
    # Precision alone is fooled: noise features land inside the wide k-NN balls of real outliers (the weakness of
    # precision that Naeem et al. 2020 measure), so it is recall, coverage and FD that give noise away.
    assert scores["recall"] < 0.1 and scores["coverage"] < 0.2 and scores["tstr_accuracy"] < 0.2
    assert image_composite(scores, labelled.reference()) < 0.4


def test_reference_without_labels_trains_on_the_pretext_task(
    unlabelled: ImageReference, digits: tuple[np.ndarray, ...]
) -> None:
    assert unlabelled.classifier_config()["task"] == "pretext" and unlabelled.n_classes is None
    reference = unlabelled.reference()
    assert reference["tstr_accuracy"] is None and reference["conditional_accuracy"] is None
    scores = unlabelled.score(digits[2])
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-6) and scores["tstr_accuracy"] is None
    noise = np.random.default_rng(0).random((300, 1, 8, 8)).astype(np.float32)
    assert unlabelled.score(noise)["frechet_distance"] > 10 * reference["frechet_floor"]
    with pytest.raises(DataError, match="fit it with train_labels"):
        unlabelled.score(digits[2], digits[3])


def test_bad_inputs_name_the_fix(labelled: ImageReference, digits: tuple[np.ndarray, ...]) -> None:
    train, labels, holdout, _ = digits
    with pytest.raises(DataError, match="1/255"):
        labelled.score((holdout * 255).astype(np.uint8))
    with pytest.raises(DataError, match=r"outside \[0, 1\].*1/255"):
        labelled.score(holdout * 16)
    with pytest.raises(DataError, match=r"\(1, 8, 8\)"):
        labelled.score(np.zeros((5, 3, 8, 8), dtype=np.float32))
    with pytest.raises(DataError, match="8 to 64 pixels"):
        ImageReference.fit(train[:, :, :4, :4], None, holdout[:, :, :4, :4], None, seed=0)
    with pytest.raises(DataError, match="both train and holdout"):
        ImageReference.fit(train, labels, holdout, None, seed=0)
    with pytest.raises(DataError, match=r"codes \[10\] outside 0..9"):
        labelled.score(holdout[:3], requested=np.array([1, 10, 2]))
