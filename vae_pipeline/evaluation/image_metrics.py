"""Image scores on a domain classifier's features (`image_classifier.py`), and the pixel-space privacy measures.

Fréchet distance (Heusel et al. 2017) between Gaussian fits of two feature sets; precision and recall
(Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020) from k-nearest-neighbour balls; the distance
of each image to its nearest training image, exact copies by hash, and the composite the ranking sorts by.
`image_reference.ImageReference` applies them to one evaluation's real and synthetic images.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import linalg

from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import dcr
from vae_pipeline.evaluation.image_classifier import (
    subsample,
)

logger = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE = 8, 64
NEIGHBOURS = 3  # k-NN balls: Kynkäänniemi et al. use k=3 (Naeem et al. 5); one k keeps the four comparable
MAX_COMPARED = 5_000  # images per compared set (FD, precision/recall, privacy queries)
MAX_INDEXED = 20_000  # training images searched for the closest one (exact copies are found among all of them)
_CHUNK = 512


# --- Metrics on feature sets -------------------------------------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussian fits of two (n, F) feature sets (Heusel et al. 2017, eq. 6).

    d² = |μa - μb|² + tr(Σa + Σb - 2 (Σa Σb)^½). As pytorch-fid does, a singular product (non-finite root) is
    retried with `eps` added to both diagonals, and so is one whose root has an imaginary diagonal above 1e-3
    (where pytorch-fid raises: one degenerate sampler should not fail the evaluation); the imaginary part left
    over is round-off and dropped.
    """
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2 or len(x) < 2:
            raise DataError(f"frechet_distance needs (n, F) features with n >= 2; {name} has shape {x.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # singular products are expected (dead ReLU units) and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all() or not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            offset = eps * np.eye(len(cov_a))
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(np.real(root))
    return max(float(value), 0.0)


def knn_radii(x: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Distance of each point to its k-th nearest *other* point of the same set."""
    if len(x) <= k:
        raise DataError(f"k-NN radii need more than k={k} points, got {len(x)}; score more images")
    out = np.empty(len(x))
    for start, block in _distance_blocks(x, x):
        out[start : start + len(block)] = np.partition(block, k, axis=1)[:, k]  # column 0 is the point itself
    return out


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1-2) with k-NN balls.

    Precision: the share of fake points inside some real point's ball; recall: the share of real points inside
    some fake point's ball. Balls are open (strict `<`, as Naeem et al.'s reference code), so identical sets score 1.
    """
    return _share_covered(fake, real, knn_radii(real, k)), _share_covered(real, fake, knn_radii(fake, k))


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, eq. 3-4), on the real points' k-NN balls only.

    Density: real balls containing each fake point, averaged and divided by k (about 1 when the distributions
    match, above 1 where fakes crowd dense real regions); coverage: the share of real balls holding a fake point.
    """
    radii = knn_radii(real, k)
    inside = 0
    covered = np.zeros(len(real), dtype=bool)
    for _, block in _distance_blocks(fake, real):
        hits = block < radii[None, :]  # (chunk, N)
        inside += int(hits.sum())
        covered |= hits.any(axis=0)
    return inside / (k * len(fake)), float(covered.mean())


def _share_covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    inside = np.zeros(len(points), dtype=bool)
    for start, block in _distance_blocks(points, centres):
        inside[start : start + len(block)] = (block < radii[None, :]).any(axis=1)
    return float(inside.mean())


def _distance_blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, Euclidean distances of a[start:start+chunk] to all of b) to bound memory."""
    b_sq = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), _CHUNK):
        chunk = a[start : start + _CHUNK]
        sq = np.einsum("ij,ij->i", chunk, chunk)[:, None] + b_sq[None, :] - 2 * chunk @ b.T
        yield start, np.sqrt(np.maximum(sq, 0.0))


# --- Privacy -----------------------------------------------------------------------------------------------------


def image_hashes(images: np.ndarray) -> np.ndarray:
    """One 16-byte digest per image after uint8 quantisation: images equal as 8-bit pixels hash equal."""
    quantised = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8).reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in quantised], dtype="S16")


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of each (flattened) query to its nearest reference row.

    The search runs in float32 matrix products; the winner's distance is recomputed directly, so a copy gives 0.
    """
    q, r = queries.reshape(len(queries), -1), reference.reshape(len(reference), -1)
    r32 = r.astype(np.float32)
    r_sq = np.einsum("ij,ij->i", r32, r32)
    out = np.empty(len(q))
    for start in range(0, len(q), _CHUNK):
        chunk = q[start : start + _CHUNK]
        nearest = np.argmin(r_sq[None, :] - 2 * chunk.astype(np.float32) @ r32.T, axis=1)
        out[start : start + len(chunk)] = np.linalg.norm(chunk.astype(np.float64) - r[nearest], axis=1)
    return out


def dcr_ratio(synthetic: np.ndarray, real: np.ndarray) -> float:
    """Synthetic over real distance to the closest training image, by the tabular guard's rule (`dcr.ratio`)."""
    return dcr.ratio(
        float(np.median(synthetic)), float(np.mean(synthetic)), float(np.median(real)), float(np.mean(real))
    )


def fidelity(real: np.ndarray, fake: np.ndarray, seed: int) -> dict[str, float]:
    """FD, precision/recall and density/coverage of a seeded subsample of `fake` the size of `real`, against it."""
    fake = fake[subsample(len(fake), len(real), np.random.default_rng(seed))]
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    return {
        "frechet_distance": frechet_distance(real, fake),
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
    }


# --- The composite -----------------------------------------------------------------------------------------------


def image_composite(score: dict[str, Any], reference: dict[str, Any]) -> float:
    """One number in [0, 1], higher is better, from `ImageReference.score` against `ImageReference.reference()`.

    The mean of: min(1, frechet_floor / frechet_distance) (1 at or below the FD the training images reach),
    precision, recall, and min(1, tstr_accuracy / train-on-real accuracy) when both accuracies exist. Each
    component is monotone in its metric, so improving one metric never lowers the composite.
    """
    floor, distance = reference["frechet_floor"], score["frechet_distance"]
    components = [1.0 if distance <= floor else floor / distance, score["precision"], score["recall"]]
    tstr, ceiling = score.get("tstr_accuracy"), reference.get("tstr_accuracy")
    if tstr is not None and ceiling:
        components.append(min(1.0, tstr / ceiling))
    return float(np.clip(np.mean(components), 0.0, 1.0))
