"""The real side of an image evaluation, fitted once and reused for every candidate sampler.

`ImageReference.fit` trains the domain classifier (`image_classifier.py`) on the real training images, embeds the
holdout images every candidate is compared with, measures the train-on-real accuracy and the privacy baseline.
`score` then takes one sampler's images (`image_metrics.py` has the metrics). Fidelity and diversity are measured
against the *holdout* (the papers use the only real set they have, the training set; with a holdout at hand, fresh
real images are the target, a generator that copies training images scores no better than the training images
themselves, and `reference()` is not trivially perfect). Every compared set is subsampled (seeded) to the
holdout's size, at most `max_images`: FD is biased in 1/n and the k-NN radii shrink with n, so equal sizes keep the
candidates and the reference comparable (Kynkäänniemi et al. 2019 compare equal-sized sets too).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import safetensors.torch

from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import dcr
from vae_pipeline.evaluation.image_classifier import (
    EPOCHS,
    PRETEXT_CLASSES,
    ClassifierConfig,
    ImageClassifier,
    class_outputs,
    subsample,
    train_classifier,
)
from vae_pipeline.evaluation.image_metrics import (
    MAX_COMPARED,
    MAX_INDEXED,
    MAX_SIDE,
    MIN_SIDE,
    dcr_ratio,
    fidelity,
    image_hashes,
    nearest_distances,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ImageReference:
    """The real side of an image evaluation, fitted once and reused for every candidate sampler."""

    classifier: ImageClassifier
    n_classes: int | None  # None: no label, the classifier solves the pretext task
    seed: int
    epochs: int
    max_images: int
    holdout: np.ndarray  # (M, C, H, W) all holdout images: the TSTR test set
    holdout_labels: np.ndarray | None
    holdout_features: np.ndarray  # (m, F) the compared holdout subsample, m <= max_images
    train_pixels: np.ndarray  # (T, C*H*W) the indexed training images, T <= MAX_INDEXED
    train_features: np.ndarray  # (T, F) their features
    train_hashes: np.ndarray  # (N,) one digest per training image, all of them
    # "pixel", "feature": half the compared holdout images (flat pixels, features), the fresh real images a candidate's
    # images are also searched in, and what the other half's distance ratio is (see `privacy`).
    holdout_half: dict[str, np.ndarray]
    real_ratio: dict[str, float]
    baseline_scores: dict[str, float]
    reference_scores: dict[str, Any]

    @classmethod
    def fit(
        cls,
        train: np.ndarray,
        train_labels: np.ndarray | None,
        holdout: np.ndarray,
        holdout_labels: np.ndarray | None,
        *,
        seed: int,
        n_classes: int | None = None,
        max_epochs: int = EPOCHS,
        max_images: int = MAX_COMPARED,
    ) -> ImageReference:
        """Train the classifier on `train` and measure everything the candidates are compared with.

        Args:
            train, holdout: (N, C, H, W) float images in [0, 1] (scale uint8 by 1/255), 8 to 64 pixels a side.
            train_labels, holdout_labels: int class codes 0..K-1, both or neither (None: no label column).
            seed: seeds the classifier, every subsample and every TSTR classifier.
            n_classes: K; by default one more than the largest label seen.
            max_epochs: the training budget of every classifier (see `train_classifier`).
            max_images: the most images in each compared set.
        """
        shape = _check_images(train, "train", None)
        _check_images(holdout, "holdout", shape)
        n_classes = _classes(train_labels, holdout_labels, n_classes)
        task = "pretext" if n_classes is None else "label"
        config = ClassifierConfig(*shape, outputs=n_classes or PRETEXT_CLASSES, task=task)
        classifier = train_classifier(train, train_labels, config, seed=seed, epochs=max_epochs)
        rng = np.random.default_rng(seed)
        held = subsample(len(holdout), max_images, rng)
        indexed = train[subsample(len(train), MAX_INDEXED, rng)]
        holdout_features, holdout_predicted = class_outputs(classifier, holdout)
        train_features = class_outputs(classifier, indexed)[0]
        train_pixels = indexed.reshape(len(indexed), -1)
        queries, half = _halves(held, rng)
        spaces = {
            "pixel": (holdout.reshape(len(holdout), -1), train_pixels),
            "feature": (holdout_features, train_features),
        }
        holdout_half = {space: values[half] for space, (values, _) in spaces.items()}
        real_ratio = {
            space: _distance_ratio(values[queries], indexed_set, values[half])
            for space, (values, indexed_set) in spaces.items()
        }
        hashes = image_hashes(train)
        baseline = _baseline(hashes, nearest_distances(holdout[held], train_pixels))
        accuracy = None if holdout_labels is None else float(np.mean(holdout_predicted == holdout_labels))
        # The training images scored as if synthetic; their privacy is the baseline itself (a DCR ratio of 1).
        scores: dict[str, Any] = fidelity(holdout_features[held], train_features, seed)
        scores.update(
            frechet_floor=scores["frechet_distance"], tstr_accuracy=accuracy, conditional_accuracy=accuracy,
            images=len(train),
            privacy={"dcr_synthetic_median": baseline["dcr_real_median"], "dcr_synthetic_p05": baseline["dcr_real_p05"],
                     **baseline, "dcr_ratio": 1.0, "pixel_dcr_ratio": 1.0, "feature_dcr_ratio": 1.0},
        )  # fmt: skip
        logger.info("image reference: %d training images, train-on-real accuracy %s", len(train), accuracy)
        return cls(
            classifier, n_classes, seed, max_epochs, max_images, holdout, holdout_labels, holdout_features[held],
            train_pixels, train_features, hashes, holdout_half, real_ratio, baseline, scores,
        )  # fmt: skip

    def score(
        self, images: np.ndarray, labels: np.ndarray | None = None, requested: np.ndarray | None = None
    ) -> dict[str, Any]:
        """One sampler's images against the real ones.

        Args:
            images: (N, C, H, W) float images in [0, 1], the shape the reference was fitted on.
            labels: their label codes, for train-on-synthetic-test-on-real (TSTR) accuracy.
            requested: the class each image was asked for (a conditional sampler), for conditional accuracy.

        Returns:
            frechet_distance, precision, recall, density, coverage; tstr_accuracy and conditional_accuracy (None
            when not measured); images (how many were scored) and privacy (see `privacy`).
        """
        _check_images(images, "synthetic images", self._shape)
        for name, codes in (("labels", labels), ("requested", requested)):
            if codes is not None:
                if self.n_classes is None:
                    raise DataError(f"the reference was fitted without labels, so `{name}` cannot be scored; "
                                    "fit it with train_labels and holdout_labels")  # fmt: skip
                _check_labels(codes, len(images), self.n_classes, name)
        features, predicted = class_outputs(self.classifier, images)
        scores: dict[str, Any] = fidelity(self.holdout_features, features, self.seed)
        scores["tstr_accuracy"] = None if labels is None else self._tstr(images, labels)
        scores["conditional_accuracy"] = None if requested is None else float(np.mean(predicted == requested))
        scores["images"] = len(images)
        scores["privacy"] = self.privacy(images, features)
        return scores

    def privacy(self, images: np.ndarray, features: np.ndarray) -> dict[str, float]:
        """Distance to the closest training image against the closest fresh real image, in pixels and features.

        Per space, the median distance of the images to their nearest training image over the median distance to
        their nearest image in half of the holdout (`holdout_half`), divided by the same ratio of the other half of
        the holdout: 1 when the images sit as near the training set as fresh real images do, near 0 for copies.
        Comparing each image's two distances, rather than its distance to the training set with the holdout's,
        matters for a VAE: its mean images are smooth, and a smooth image sits nearer in pixels to *any* real image
        than a textured real image does (on Fashion-MNIST the plain comparison gave gmm a pixel ratio of 0.8 while
        its feature ratio was 1.3); the division by the real halves' ratio takes out that the training set is
        larger than the holdout half (nearest neighbours are nearer in a larger set).

        Returns the tabular `privacy.privacy` keys, so `privacy.verdict` applies unchanged: dcr_ratio the smaller
        of pixel_dcr_ratio and feature_dcr_ratio (a copy in either space is a copy); dcr_synthetic_median and _p05
        the pixel distance to the nearest indexed training image, dcr_real_* the holdout images' (shown beside it);
        exact_copy_share the share of all `images` equal to a training image as 8-bit pixels; rows their number.
        """
        rng = np.random.default_rng(self.seed)
        probe = subsample(len(images), self.max_images, rng)
        queries = {"pixel": images[probe].reshape(len(probe), -1), "feature": features[probe]}
        training = {"pixel": self.train_pixels, "feature": self.train_features}
        ratios = [
            _relative(
                _distance_ratio(queries[space], training[space], self.holdout_half[space]), self.real_ratio[space]
            )
            for space in ("pixel", "feature")
        ]
        pixel = nearest_distances(queries["pixel"], self.train_pixels)
        return {
            "dcr_synthetic_median": float(np.median(pixel)),
            "dcr_synthetic_p05": float(np.quantile(pixel, 0.05)),
            "dcr_real_median": self.baseline_scores["dcr_real_median"],
            "dcr_real_p05": self.baseline_scores["dcr_real_p05"],
            "dcr_ratio": min(ratios),
            "pixel_dcr_ratio": ratios[0],
            "feature_dcr_ratio": ratios[1],
            "exact_copy_share": float(np.isin(image_hashes(images), self.train_hashes).mean()),
            "rows": len(images),
        }

    def reference(self) -> dict[str, Any]:
        """The training images scored as if synthetic, in `score`'s shape, plus frechet_floor.

        frechet_floor (= its frechet_distance) is the FD that copying the training set reaches at this sample size
        (in a classifier trained on those images, so a little above what fresh real images would reach);
        tstr_accuracy and conditional_accuracy are the real classifier's holdout accuracy; privacy is the baseline
        (holdout images against the training images, DCR ratio 1).
        """
        return {**self.reference_scores, "privacy": dict(self.reference_scores["privacy"])}

    def baseline(self) -> dict[str, float]:
        """What `privacy.verdict` compares with: exact_copy_share, rows and dcr_real_median, _p05 and _mean."""
        return dict(self.baseline_scores)

    def classifier_bytes(self) -> bytes:
        """The classifier's weights as safetensors bytes (rebuild with `load_classifier`)."""
        return safetensors.torch.save({k: v.contiguous() for k, v in self.classifier.state_dict().items()})

    def classifier_config(self) -> dict[str, Any]:
        """The JSON-able config that, with `classifier_bytes`, rebuilds the classifier."""
        return asdict(self.classifier.config)

    @property
    def _shape(self) -> tuple[int, int, int]:
        config = self.classifier.config
        return config.channels, config.height, config.width

    def _tstr(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Holdout accuracy of a fresh classifier (the real one's seed and budget) trained on synthetic images."""
        model = train_classifier(images, labels, self.classifier.config, seed=self.seed, epochs=self.epochs)
        return float(np.mean(class_outputs(model, self.holdout)[1] == self.holdout_labels))


def _classes(train: np.ndarray | None, holdout: np.ndarray | None, n_classes: int | None) -> int | None:
    """K for labelled images (given, else one more than the largest code), None without labels."""
    if train is None or holdout is None:
        if (train is None) != (holdout is None):
            raise DataError("give labels for both train and holdout images or for neither (None)")
        return None
    n_classes = n_classes or int(max(train.max(initial=0), holdout.max(initial=0))) + 1
    _check_labels(train, len(train), n_classes, "train_labels")
    _check_labels(holdout, len(holdout), n_classes, "holdout_labels")
    return n_classes


def _halves(held: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of the compared holdout indices into two halves (queries, reference)."""
    order = rng.permutation(held)
    middle = max(1, len(order) // 2)
    return np.sort(order[:middle]), np.sort(order[middle:] if len(order) > 1 else order)


def _distance_ratio(queries: np.ndarray, training: np.ndarray, fresh: np.ndarray) -> float:
    """Median distance to the nearest training row over the median to the nearest fresh real row (`dcr.ratio`)."""
    return dcr_ratio(nearest_distances(queries, training), nearest_distances(queries, fresh))


def _relative(ratio: float, real: float) -> float:
    """The images' ratio over the real halves' (both finite and positive but for copies: see `dcr.ratio`)."""
    return min(ratio / real, dcr.MAX_DCR_RATIO) if real > 0 else dcr.MAX_DCR_RATIO


def _baseline(hashes: np.ndarray, pixel: np.ndarray) -> dict[str, float]:
    """Copies among the training images (leave-one-out: the share with a twin) and holdout-to-train pixel DCR."""
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    return {
        "exact_copy_share": float((counts[inverse] > 1).mean()),
        "rows": len(hashes),
        "dcr_real_median": float(np.median(pixel)),
        "dcr_real_p05": float(np.quantile(pixel, 0.05)),
        "dcr_real_mean": float(np.mean(pixel)),
    }


def _check_images(images: np.ndarray, name: str, shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """(C, H, W) of valid images: a float (N, C, H, W) array in [0, 1], 8..64 a side, `shape` when given."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or len(images) == 0:
        raise DataError(f"{name} must be a non-empty (N, C, H, W) numpy array, got {getattr(images, 'shape', images)}")
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(
            f"{name} have dtype {images.dtype}; give float32 values in [0, 1] (scale uint8 images by 1/255)"
        )
    found = (images.shape[1], images.shape[2], images.shape[3])
    if shape is not None and found != shape:
        raise DataError(f"{name} are {found} (C, H, W) but the reference images are {shape}; give that shape")
    if not MIN_SIDE <= min(found[1:]) <= max(found[1:]) <= MAX_SIDE:
        raise DataError(f"{name} are {found[1]}x{found[2]}; image metrics take {MIN_SIDE} to {MAX_SIDE} pixels a side")
    bad = images[~((images >= 0) & (images <= 1))]  # NaN fails both tests
    if bad.size:
        raise DataError(f"{name} hold values outside [0, 1], e.g. {bad[:3].tolist()}; scale uint8 images by 1/255")
    return found


def _check_labels(labels: np.ndarray, n: int, n_classes: int, name: str) -> None:
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name} must be {n} integer class codes, got dtype {labels.dtype} shape {labels.shape}")
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if bad.size:
        raise DataError(f"{name} hold codes {sorted(set(bad.tolist()))[:3]} outside 0..{n_classes - 1}; "
                        "give codes 0..K-1 or a larger n_classes")  # fmt: skip
