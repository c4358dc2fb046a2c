"""How close synthetic rows sit to the training rows, against how close fresh real rows naturally come.

Pure functions on pandas frames (no Ray, no IO), like `metrics.py`, whose normalisation they share.

The baseline is the crux. Real tables repeat rows (coarse values, codes, survey answers), so a faithful generator
must reproduce training rows at the rate at which fresh real rows happen to equal them. The holdout cannot measure
that rate: the split hashes each row's content, so identical rows always share a split and a holdout row can never
equal a training row (its copy rate is zero by construction, and its distances are biased upwards). The baseline is
therefore measured leave-one-out on a row-level sample of the training rows: each sampled row is a fresh draw from
the data distribution with respect to the other training rows, so

* the natural copy rate is the share of training rows that have a twin among the other training rows, and
* the natural distance is each training row's distance to its nearest *other* training row.

Synthetic rows are compared with the same training rows, so both figures refer to one reference set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from vae_pipeline.evaluation import dcr
from vae_pipeline.evaluation.metrics import NULL_TEXT, normalise, require_rows, subsample

_NN_CHUNK_ROWS = 1024
MAX_DCR_RATIO = dcr.MAX_DCR_RATIO  # re-exported: callers and tests read it here


@dataclass(frozen=True)
class TrainingIndex:
    """The training rows, encoded once for every candidate: distance encoder, matrix and row hashes."""

    kinds: dict[str, str]
    encoder: dict[str, Any]
    matrix: np.ndarray  # (N, F) encoded training rows
    hashes: np.ndarray  # (N,) one hash per normalised row; equal rows hash equal
    neighbours: NearestNeighbors  # fitted on `matrix`, brute force

    @property
    def rows(self) -> int:
        return len(self.hashes)


def index_training_rows(train: pd.DataFrame, kinds: dict[str, str]) -> TrainingIndex:
    """Encode the training rows for distance and copy checks.

    Continuous columns become (x - median) / IQR (the std, else 1, when the IQR is 0) with null as 0 plus a null
    indicator; categorical columns one-hot with null a category and categories unseen in train all-zero.
    """
    frame = normalise(train, kinds, "train")
    require_rows(frame, "train")
    encoder = _fit_distance_encoder(frame, kinds)
    matrix = _distance_matrix(frame, encoder)
    neighbours = NearestNeighbors(n_neighbors=2 if len(frame) > 1 else 1, algorithm="brute").fit(matrix)
    return TrainingIndex(kinds, encoder, matrix, _row_hashes(frame), neighbours)


def real_baseline(index: TrainingIndex, *, max_rows: int = 5000, seed: int = 0) -> dict[str, float]:
    """What fresh real rows do: leave-one-out copy rate and nearest-other-row distances of the training rows.

    Returns:
        exact_copy_share: the share of training rows equal (on every column, nulls equal) to another training row;
        dcr_real_median, dcr_real_mean and dcr_real_p05: the median, mean and 5th percentile of each (subsampled,
        seeded) training row's distance to its nearest other training row (all 0 for a single row); rows: the
        training rows the copy share counts.
    """
    _, inverse, counts = np.unique(index.hashes, return_inverse=True, return_counts=True)
    copy_share = float((counts[inverse] > 1).mean())
    if index.rows == 1:  # no other row to come close to
        return {
            "exact_copy_share": copy_share,
            "dcr_real_median": 0.0,
            "dcr_real_mean": 0.0,
            "dcr_real_p05": 0.0,
            "rows": 1,
        }
    rng = np.random.default_rng(seed)
    probe = np.arange(index.rows) if index.rows <= max_rows else np.sort(rng.choice(index.rows, max_rows, False))
    distances = _leave_one_out_distances(index, probe)
    return {
        "exact_copy_share": copy_share,
        "dcr_real_median": float(np.median(distances)),
        "dcr_real_mean": float(np.mean(distances)),
        "dcr_real_p05": float(np.quantile(distances, 0.05)),
        "rows": index.rows,
    }


def privacy(
    synthetic: pd.DataFrame, index: TrainingIndex, baseline: dict[str, float], *, max_rows: int = 5000, seed: int = 0
) -> dict[str, float]:
    """Distance to closest training record (DCR) and exact copies of synthetic rows, beside the real baseline.

    Returns:
        dcr_synthetic_median and dcr_synthetic_p05 over (subsampled, seeded) synthetic rows; dcr_real_median and
        dcr_real_p05 from `baseline`; dcr_ratio = synthetic median / real median (>= 1: synthetic rows sit no
        closer to training rows than fresh real rows do; see `_dcr_ratio` where the real median is 0);
        exact_copy_share: the share of all synthetic rows equal to some training row on every column, and
        rows: how many synthetic rows that share counts.
    """
    frame = normalise(synthetic, index.kinds, "synthetic")
    require_rows(frame, "synthetic")
    copies = np.isin(_row_hashes(frame), index.hashes)
    sample = subsample(frame, max_rows, np.random.default_rng(seed))
    distances = _nearest_distances(_distance_matrix(sample, index.encoder), index)
    synthetic_median, real_median = float(np.median(distances)), baseline["dcr_real_median"]
    return {
        "dcr_synthetic_median": synthetic_median,
        "dcr_synthetic_p05": float(np.quantile(distances, 0.05)),
        "dcr_real_median": real_median,
        "dcr_real_p05": baseline["dcr_real_p05"],
        "dcr_ratio": _dcr_ratio(distances, baseline),
        "exact_copy_share": float(copies.mean()),
        "rows": len(frame),
    }


def real_rows_scores(baseline: dict[str, float]) -> dict[str, float]:
    """The baseline in the shape `privacy` returns, for real training rows scored as if synthetic (DCR ratio 1)."""
    return {
        "dcr_synthetic_median": baseline["dcr_real_median"],
        "dcr_synthetic_p05": baseline["dcr_real_p05"],
        **baseline,
        "dcr_ratio": 1.0,
    }


def verdict(
    scores: dict[str, float], baseline: dict[str, float], *, privacy_margin: float, max_copy_excess: float
) -> tuple[bool, str | None]:
    """The privacy guard: refuse rows that sit closer to training rows, or copy them more, than fresh real rows.

    The copy limit is the natural rate plus `max_copy_excess`, plus three standard errors of the difference of the
    two measured shares: on a table where 40% of rows repeat, a faithful sample of 2,000 rows varies by about a
    point from the baseline by chance alone, and a fixed 1% would refuse it a third of the time.

    Returns:
        (passes, the reason in plain words when it does not).
    """
    ratio, copies, natural = scores["dcr_ratio"], scores["exact_copy_share"], baseline["exact_copy_share"]
    if ratio < 1 - privacy_margin:
        return False, (
            f"synthetic rows sit closer to training rows than fresh real rows do (DCR ratio "
            f"{ratio:.2f} < {1 - privacy_margin:.2f})"
        )
    noise = 3 * math.sqrt(natural * (1 - natural) * (1 / max(scores["rows"], 1) + 1 / max(baseline["rows"], 1)))
    if copies > natural + max_copy_excess + noise:
        return False, f"{copies:.1%} of rows copy a training row (fresh real rows: {natural:.1%})"
    return True, None


def _dcr_ratio(synthetic: np.ndarray, baseline: dict[str, float]) -> float:
    """Synthetic over real distance to the closest training record, by `dcr.ratio`'s rule."""
    synthetic_median, synthetic_mean = float(np.median(synthetic)), float(np.mean(synthetic))
    return dcr.ratio(synthetic_median, synthetic_mean, baseline["dcr_real_median"], baseline["dcr_real_mean"])


def _fit_distance_encoder(train: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """Per continuous column (median, scale); per categorical column the sorted categories seen in train."""
    state: dict[str, Any] = {}
    for column, kind in kinds.items():
        values = train[column].to_numpy()
        if kind == "categorical":
            state[column] = sorted(set(np.where(pd.isna(values), NULL_TEXT, values).tolist()))
            continue
        present = values[~np.isnan(values)]
        if present.size == 0:
            state[column] = (0.0, 1.0)
            continue
        q25, median, q75 = np.quantile(present, [0.25, 0.5, 0.75])
        scale = next((s for s in (q75 - q25, present.std()) if s > 0), 1.0)  # IQR, else std, else 1
        state[column] = (float(median), float(scale))
    return state


def _distance_matrix(frame: pd.DataFrame, encoder: dict[str, Any]) -> np.ndarray:
    """Scaled continuous value (0 when null) + a null indicator; categorical one-hot, unseen values all-zero."""
    blocks = []
    for column, state in encoder.items():
        values = frame[column].to_numpy()
        if isinstance(state, tuple):
            null = np.isnan(values)
            blocks += [np.where(null, 0.0, (values - state[0]) / state[1]), null.astype("float64")]
            continue
        codes = pd.Categorical(np.where(pd.isna(values), NULL_TEXT, values), categories=state).codes
        onehot = np.zeros((len(frame), len(state)))
        seen = codes >= 0
        onehot[np.flatnonzero(seen), codes[seen]] = 1.0
        blocks.append(onehot)
    return np.column_stack(blocks)


def _nearest_distances(queries: np.ndarray, index: TrainingIndex) -> np.ndarray:
    """Euclidean distance of each query row to its nearest training row, in query chunks to bound memory."""
    out = np.empty(len(queries))
    for start in range(0, len(queries), _NN_CHUNK_ROWS):
        chunk = queries[start : start + _NN_CHUNK_ROWS]
        nearest = index.neighbours.kneighbors(chunk, n_neighbors=1, return_distance=False)[:, 0]
        # Recomputed directly: brute search's |a|^2 + |b|^2 - 2ab leaves ~1e-8 where a copy should give exactly 0.
        out[start : start + len(chunk)] = np.linalg.norm(chunk - index.matrix[nearest], axis=1)
    return out


def _leave_one_out_distances(index: TrainingIndex, probe: np.ndarray) -> np.ndarray:
    """Distance of each probed training row to its nearest *other* training row.

    The two nearest rows of a training row are itself (distance 0) and its nearest other row, or two of its twins
    (both 0); either way the larger of the two recomputed distances is the answer.
    """
    out = np.empty(len(probe))
    for start in range(0, len(probe), _NN_CHUNK_ROWS):
        rows = probe[start : start + _NN_CHUNK_ROWS]
        chunk = index.matrix[rows]
        pair = index.neighbours.kneighbors(chunk, n_neighbors=2, return_distance=False)  # (C, 2)
        exact = np.linalg.norm(chunk[:, None, :] - index.matrix[pair], axis=2)  # (C, 2)
        out[start : start + len(rows)] = exact.max(axis=1)
    return out


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()
