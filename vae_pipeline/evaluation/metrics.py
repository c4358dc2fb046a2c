"""Metrics that compare a synthetic table with real tables: pure functions on pandas frames (no Ray, no IO).

Every function takes `kinds` (column -> "continuous" | "categorical") and looks only at those columns. Frames may
come from `pyarrow.Table.to_pandas()` with numpy, ArrowDtype, str or object dtypes; `_normalise` turns each into
float64 (continuous, NaN for null) or object holding canonical text (categorical, NaN for null), so that the int
`2007`, the float `2007.0` and the string "2007" are one category, and `True` is "True".
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

from vae_pipeline.errors import DataError

logger = logging.getLogger(__name__)

KINDS = ("continuous", "categorical")
_MAX_CATEGORY_CODES = 255  # HistGradientBoosting's default max_bins: categorical codes must lie in [0, 255)
NULL_TEXT = "\x00null"  # the null category in encodings; canonical values never start with NUL


# ----------------------------------------------------------------------------------------------- normalisation


def _canonical(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(float(value)))
    return str(value)


def _as_categorical(series: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    labels = np.array([_canonical(v) for v in uniques], dtype=object)
    out = np.full(len(series), np.nan, dtype=object)
    present = codes >= 0
    out[present] = labels[codes[present]]
    return out


def _as_continuous(series: pd.Series, column: str) -> np.ndarray:
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (ValueError, TypeError) as exc:
        example = series.dropna().iloc[:3].tolist()
        raise DataError(
            f"column {column!r} is marked continuous but holds non-numeric values such as {example}; "
            "mark it categorical in kinds"
        ) from exc


def _check_kinds(kinds: dict[str, str]) -> None:
    if not kinds:
        raise DataError("kinds is empty; pass at least one column as 'continuous' or 'categorical'")
    for column, kind in kinds.items():
        if kind not in KINDS:
            raise DataError(f"column {column!r} has kind {kind!r}; use one of {list(KINDS)}")


def normalise(frame: pd.DataFrame, kinds: dict[str, str], role: str) -> pd.DataFrame:
    """The kinds' columns of `frame`, in kinds order: continuous as float64, categorical as canonical text."""
    _check_kinds(kinds)
    missing = [c for c in kinds if c not in frame.columns]
    if missing:
        raise DataError(f"the {role} frame lacks column {missing[0]!r} named in kinds; add it or drop it from kinds")
    data = {
        column: pd.Series(
            _as_continuous(frame[column], column) if kind == "continuous" else _as_categorical(frame[column]),
            dtype="float64" if kind == "continuous" else object,
        )
        for column, kind in kinds.items()
    }
    return pd.DataFrame(data)


def require_rows(frame: pd.DataFrame, role: str) -> None:
    if len(frame) == 0:
        raise DataError(f"the {role} frame has no rows; pass a frame with at least one row")


def subsample(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    index = np.sort(rng.choice(len(frame), size=rows, replace=False))
    return frame.iloc[index].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- encodings


def _ordinal_codes(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Shared ordinal codes (as float) for one categorical column split over several frames; null is a code.

    Beyond 255 distinct values the rarest share one code, since HistGradientBoosting takes at most 255 categories.
    """
    joined = np.concatenate([np.where(pd.isna(p), NULL_TEXT, p).astype(object) for p in parts])
    codes, _ = pd.factorize(joined)
    if codes.max(initial=-1) >= _MAX_CATEGORY_CODES:
        keep = np.argsort(-np.bincount(codes), kind="stable")[: _MAX_CATEGORY_CODES - 1]
        remap = np.full(codes.max() + 1, _MAX_CATEGORY_CODES - 1)
        remap[keep] = np.arange(len(keep))
        codes = remap[codes]
    return np.split(codes.astype("float64"), np.cumsum([len(p) for p in parts])[:-1])


def _tree_features(frames: list[pd.DataFrame], kinds: dict[str, str]) -> tuple[list[np.ndarray], np.ndarray]:
    """Feature matrices for HistGradientBoosting (continuous with NaN, categorical as shared codes) + the mask."""
    columns: list[list[np.ndarray]] = [[] for _ in frames]
    for column, kind in kinds.items():
        parts = [f[column].to_numpy() for f in frames]
        encoded = [p.astype("float64") for p in parts] if kind == "continuous" else _ordinal_codes(parts)
        for held, values in zip(columns, encoded, strict=True):
            held.append(values)
    mask = np.array([kind == "categorical" for kind in kinds.values()])
    return [np.column_stack(c) if c else np.empty((len(f), 0)) for c, f in zip(columns, frames, strict=True)], mask


# ----------------------------------------------------------------------------------------------- metrics


def sdmetrics_metadata(kinds: dict[str, str]) -> dict[str, Any]:
    """SDMetrics single-table metadata for `kinds`: continuous -> numerical, categorical -> categorical."""
    _check_kinds(kinds)
    sdtypes = {"continuous": "numerical", "categorical": "categorical"}
    return {"columns": {column: {"sdtype": sdtypes[kind]} for column, kind in kinds.items()}}


def outside_support(train: pd.DataFrame, synthetic: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Per column, the share of non-null synthetic values that no training row holds (0.0 when all are null).

    Meant for discrete and categorical numeric columns, whose decoder must write only observed values (a continuous
    model of a column binned at 17.5, 22, 27 writes 17.6). Numbers compare by value, so the int 2007 equals the
    float 2007.0; a column that is not numeric on both sides compares canonical text, as the other metrics do.
    """
    shares = {}
    for column in columns:
        for role, frame in (("train", train), ("synthetic", synthetic)):
            if column not in frame.columns:
                raise DataError(f"the {role} frame lacks column {column!r} named in columns; add it or drop it")
        real, fake = _comparable(train[column], synthetic[column])
        fake = fake[~pd.isna(fake)]
        shares[column] = float(np.mean(~pd.Series(fake).isin(real[~pd.isna(real)]))) if len(fake) else 0.0
    return shares


def _comparable(real: pd.Series, synthetic: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Both columns as float64 when both are numeric, else as canonical text (NaN for null either way)."""
    try:
        return _as_continuous(real, str(real.name)), _as_continuous(synthetic, str(synthetic.name))
    except DataError:
        return _as_categorical(real), _as_categorical(synthetic)


def quality_score(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """SDMetrics QualityReport of `synthetic` against `real`; every score in [0, 1], higher is better.

    Returns:
        {"score", "column_shapes", "column_pair_trends", "per_column": {column: shape score}}. Column shapes are
        KS complement (continuous) / TV complement (categorical); pair trends need two columns (None with one:
        report.json holds no NaN).
    """
    from sdmetrics.reports.single_table import QualityReport  # heavy import (plotly, copulas): only when used

    real_n, synthetic_n = normalise(real, kinds, "real"), normalise(synthetic, kinds, "synthetic")
    require_rows(real_n, "real")
    require_rows(synthetic_n, "synthetic")
    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(real_n, synthetic_n, sdmetrics_metadata(kinds), verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes")
    if "Error" in shapes.columns and shapes["Error"].notna().any():
        logger.warning("sdmetrics column-shape errors: %s", shapes.loc[shapes["Error"].notna(), "Error"].tolist())
    trends = float(properties.get("Column Pair Trends", math.nan))
    return {
        "score": float(report.get_score()),
        "column_shapes": float(properties.get("Column Shapes", math.nan)),
        "column_pair_trends": trends if math.isfinite(trends) else None,
        "per_column": {str(c): float(s) for c, s in zip(shapes["Column"], shapes["Score"], strict=True)},
    }


def detection_auc(
    real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str], *, seed: int, folds: int = 3
) -> float:
    """Classifier two-sample test: cross-validated ROC AUC of telling synthetic (1) from real (0) rows.

    The larger side is subsampled (seeded) to the smaller side's size, so 0.5 means indistinguishable and 1.0
    means every row is told apart. The plain mean AUC is reported; values below 0.5 are noise.
    """
    real_n, synthetic_n = normalise(real, kinds, "real"), normalise(synthetic, kinds, "synthetic")
    rows = min(len(real_n), len(synthetic_n))
    if rows < 2 * folds:
        raise DataError(
            f"detection with {folds} folds needs at least {2 * folds} rows per side, got real={len(real_n)} "
            f"synthetic={len(synthetic_n)}; pass more rows or fewer folds"
        )
    rng_real, rng_synthetic = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    real_n, synthetic_n = subsample(real_n, rows, rng_real), subsample(synthetic_n, rows, rng_synthetic)
    (x_real, x_synthetic), categorical = _tree_features([real_n, synthetic_n], kinds)
    features = np.vstack([x_real, x_synthetic])
    labels = np.concatenate([np.zeros(rows, dtype=int), np.ones(rows, dtype=int)])
    model = HistGradientBoostingClassifier(random_state=seed, max_iter=100, categorical_features=categorical)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, features, labels, cv=cv, scoring="roc_auc")))


def utility(
    train: pd.DataFrame, test: pd.DataFrame, label: str, kinds: dict[str, str], *, seed: int
) -> dict[str, float]:
    """Train on `train`, test on `test` (TSTR when `train` is synthetic): predict the categorical `label`.

    Rows with a null label are dropped from both frames. A single-class `train` predicts that class. Classes in
    `test` that `train` lacks are never predicted and so count as errors.

    Returns:
        {"accuracy", "macro_f1", "balanced_accuracy"} on `test`.
    """
    if kinds.get(label) != "categorical":
        raise DataError(f"utility label {label!r} must be a categorical column in kinds, got {kinds.get(label)!r}")
    train_n, test_n = normalise(train, kinds, "train"), normalise(test, kinds, "test")
    train_n, test_n = (f[f[label].notna()].reset_index(drop=True) for f in (train_n, test_n))
    require_rows(train_n, "train (rows with a label)")
    require_rows(test_n, "test (rows with a label)")
    features = {c: k for c, k in kinds.items() if c != label}
    y_train, y_test = train_n[label].to_numpy(dtype=str), test_n[label].to_numpy(dtype=str)
    if not features or len(np.unique(y_train)) == 1:
        model: Any = DummyClassifier(strategy="most_frequent")
        x_train, x_test = np.zeros((len(train_n), 1)), np.zeros((len(test_n), 1))
    else:
        (x_train, x_test), categorical = _tree_features([train_n, test_n], features)
        model = HistGradientBoostingClassifier(random_state=seed, max_iter=100, categorical_features=categorical)
    predicted = model.fit(x_train, y_train).predict(x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" is expected here
        return {
            "accuracy": float(accuracy_score(y_test, predicted)),
            "macro_f1": float(f1_score(y_test, predicted, average="macro", zero_division=0)),
            "balanced_accuracy": float(balanced_accuracy_score(y_test, predicted)),
        }


def composite_score(metrics: dict[str, float]) -> float:
    """One number in [0, 1], higher is better: the mean of the components present.

    Components: `quality` (QualityReport score), detection `1 - 2 * |detection_auc - 0.5|` clipped to [0, 1]
    (1 when indistinguishable, 0 when perfectly detected), and `macro_f1` (utility) when present. Each component
    is monotone in its metric, so improving any one metric never lowers the composite.
    """
    missing = [k for k in ("quality", "detection_auc") if k not in metrics]
    if missing:
        raise DataError(f"composite_score needs {missing[0]!r} in metrics (got {sorted(metrics)}); compute it first")
    components = [metrics["quality"], min(1.0, max(0.0, 1.0 - 2.0 * abs(metrics["detection_auc"] - 0.5)))]
    if "macro_f1" in metrics:
        components.append(metrics["macro_f1"])
    return float(np.mean(components))


def rank_scores(scores: dict[str, dict[str, float]]) -> list[str]:
    """Names (e.g. samplers) by `composite_score` of their metrics, best first; ties by name, NaN last."""
    composite = {name: composite_score(metrics) for name, metrics in scores.items()}

    def order(name: str) -> tuple[bool, float, str]:
        value = composite[name]
        return (math.isnan(value), 0.0 if math.isnan(value) else -value, name)

    return sorted(composite, key=order)
