"""Quality benchmark: our pipeline (Ray-trained VAE, aggregate-posterior samplers, `auto`) against SDV's TVAE.

Both systems see the same split of the same table: our seeded row split keeps a holdout that neither system trains
on; TVAE is fitted on every non-holdout row (our train + validation rows); both train for the same number of epochs
with the same batch size and seed, sample the same number of rows, and are scored on the same holdout with the same
functions (`vae_pipeline.evaluation.metrics`). See benchmarks/README.md for what is measured and the last results.

    python benchmarks/quality.py [--datasets penguins,breast_cancer,wine,digits] [--epochs N] [--seed S]
                                 [--batch-size B] [--out out/bench/quality]

Needs SDV (`make bench-install`); never part of `make test`.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from threadpoolctl import threadpool_limits

from vae_pipeline.bundle import load_bundle
from vae_pipeline.config import DataConfig, PipelineConfig, SamplerConfig, parse_sampler, sampler_config
from vae_pipeline.data import open_source
from vae_pipeline.evaluation import metrics, privacy
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.evaluation.sampling import sample_real_rows
from vae_pipeline.generation.job import load_artifacts
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.runtime import shutdown_ray
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.split import Split, split_codes
from vae_pipeline.training.job import run_training

REPO = Path(__file__).resolve().parents[1]
SMALL_TABLE_ROWS = 1_000  # below this the holdout is 20% of the rows instead of 10%, so it can be scored


# ----------------------------------------------------------------------------------------------- datasets


def _penguins() -> pd.DataFrame:
    return pq.read_table(REPO / "data" / "penguins.parquet").to_pandas()


def _sklearn(name: str, integer_features: bool = False) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        frame = getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame
        if integer_features:  # digits: pixel intensities 0..16 arrive as float64; they are integers
            frame = frame.astype({c: "int64" for c in frame.columns if c != "target"})
        return frame

    return load


@dataclass(frozen=True)
class Dataset:
    load: Callable[[], pd.DataFrame]
    label: str


DATASETS: dict[str, Dataset] = {
    "penguins": Dataset(_penguins, "species"),
    "breast_cancer": Dataset(_sklearn("breast_cancer"), "target"),
    "wine": Dataset(_sklearn("wine"), "target"),
    "digits": Dataset(_sklearn("digits", integer_features=True), "target"),
}


def write_table(frame: pd.DataFrame, directory: Path) -> str:
    """The dataset as a Parquet file, so the pipeline reads it like a user's table."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "table.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return str(path)


# ----------------------------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class RealRows:
    holdout: pd.DataFrame  # every holdout row: neither system trains on them
    modelled: pd.DataFrame  # every non-holdout row (train + validation): TVAE's training set, the privacy reference
    train: int  # rows in the TRAIN split (what our model's gradient steps see)


def real_rows(data: DataConfig) -> RealRows:
    source = open_source(data)
    total = source.count_rows()
    sample = sample_real_rows(source, data, rows=total, seed=0)  # rows=total: every holdout and train row
    modelled = [b.filter(pa.array(split_codes(b, data) != Split.HOLDOUT)) for b in source.batches(data.batch_rows)]
    return RealRows(
        holdout=sample.holdout.to_pandas(),
        modelled=pa.Table.from_batches(modelled, schema=source.schema).to_pandas(),
        train=sample.train.num_rows,
    )


# ----------------------------------------------------------------------------------------------- our pipeline


@dataclass(frozen=True)
class OursRun:
    model_url: str
    statistics_url: str
    report: dict[str, Any]
    seconds: float
    epoch_seconds: list[float]


def pipeline_config(
    name: str, table_url: str, rows: int, args: argparse.Namespace, synthetic_rows: int
) -> PipelineConfig:
    label = DATASETS[name].label
    root = args.out / name
    return PipelineConfig.model_validate(
        {
            "model_url": str(root / "model"),
            "data": {
                "input_url": table_url,
                "label_column": label,
                "column_kinds": {label: "categorical"},
                "holdout_fraction": 0.2 if rows < SMALL_TABLE_ROWS else 0.1,
                "split_seed": args.seed,
            },
            "training": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed},
            "statistics": {"seed": args.seed},
            "sampler": {"name": "auto"},
            "evaluation": {"rows": min(2_000, synthetic_rows), "seed": args.seed},
            "generation": {"output_url": str(root / "synthetic"), "seed": args.seed},
        }
    )


def run_ours(config: PipelineConfig) -> OursRun:
    # A rerun with the same settings would resume from the old checkpoints and train nothing: start clean.
    shutil.rmtree(config.model_url, ignore_errors=True)
    started = time.perf_counter()
    model_url = run_training(config)
    seconds = time.perf_counter() - started
    statistics_url = run_statistics(config, model_url=model_url)
    report_url = run_evaluation(config, model_url=model_url, statistics_url=statistics_url)
    report = json.loads(Path(report_url).read_text())
    epoch_seconds = [float(m["seconds"]) for m in load_bundle(model_url).metrics]
    return OursRun(model_url, statistics_url, report, seconds, epoch_seconds)


def auto_sampler(report: dict[str, Any]) -> tuple[str, SamplerConfig]:
    """The evaluation's choice; when no sampler passed the privacy guard, the top-ranked one (marked so)."""
    choice = report["choice"]
    if choice is not None:
        return choice["name"], parse_sampler(choice["sampler"])
    best = report["samplers"][0]
    return f"{best['name']}, no sampler passed the privacy guard", parse_sampler(best["sampler"])


def generate_ours(run: OursRun, sampler: SamplerConfig, rows: int, seed: int) -> pd.DataFrame:
    bundle, posterior = load_artifacts(run.model_url, run.statistics_url)
    fitted = build_sampler(sampler).fit(posterior)
    table = ShardGenerator(bundle, posterior, fitted).generate(ShardSpec(index=0, rows=rows, seed=seed))
    return table.to_pandas()


# ----------------------------------------------------------------------------------------------- TVAE


def seed_everything(seed: int) -> None:
    """TVAE takes no seed: its weights, batches and samples come from the global torch and numpy generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tvae_metadata(kinds: dict[str, str]) -> Any:
    """SDV metadata with our inferred kinds, so both systems model every column the same way."""
    from sdv.metadata import Metadata

    sdtypes = {"continuous": "numerical", "categorical": "categorical"}
    columns = {column: {"sdtype": sdtypes[kind]} for column, kind in kinds.items()}
    return Metadata.load_from_dict({"tables": {"table": {"columns": columns}}}, single_table_name="table")


def run_tvae(
    modelled: pd.DataFrame, kinds: dict[str, str], args: argparse.Namespace, rows: int
) -> tuple[pd.DataFrame, float]:
    from sdv.single_table import TVAESynthesizer

    torch.set_num_threads(args.tvae_threads)  # our Ray Train worker runs on one CPU (OMP_NUM_THREADS=1)
    seed_everything(args.seed)
    synthesizer = TVAESynthesizer(
        tvae_metadata(kinds), epochs=args.epochs, batch_size=args.batch_size, enable_gpu=False
    )
    started = time.perf_counter()
    synthesizer.fit(modelled)
    seconds = time.perf_counter() - started
    seed_everything(args.seed)
    return synthesizer.sample(num_rows=rows), seconds


# ----------------------------------------------------------------------------------------------- scoring


def score(synthetic: pd.DataFrame, real: RealRows, kinds: dict[str, str], label: str, seed: int) -> dict[str, Any]:
    """The same four metrics the evaluation job uses, against the full holdout; privacy against every modelled row."""
    return {
        "quality": metrics.quality_score(real.holdout, synthetic, kinds),
        "detection_auc": metrics.detection_auc(real.holdout, synthetic, kinds, seed=seed),
        "utility": metrics.utility(synthetic, real.holdout, label, kinds, seed=seed),
        "privacy": privacy.privacy(synthetic, *_training_index(real, kinds), seed=seed),
    }


def _training_index(real: RealRows, kinds: dict[str, str]) -> tuple[privacy.TrainingIndex, dict[str, float]]:
    index = privacy.index_training_rows(real.modelled, kinds)
    return index, privacy.real_baseline(index)


def ceiling(real: RealRows, kinds: dict[str, str], label: str, seed: int) -> dict[str, Any]:
    """The real modelled rows scored as if synthetic. Their own privacy is trivially 0, so, as in the evaluation
    job, the privacy entry is the leave-one-out baseline (DCR ratio 1 by definition, the share of rows with a twin)."""
    entry = score(real.modelled, real, kinds, label, seed)
    baseline = _training_index(real, kinds)[1]
    entry["privacy"] = privacy.real_rows_scores(baseline)
    return entry


def targets(systems: dict[str, dict[str, Any]], auto_key: str) -> dict[str, bool]:
    ours, tvae = systems[auto_key], systems["TVAE"]
    ours_dcr, tvae_dcr = ours["privacy"]["dcr_ratio"], tvae["privacy"]["dcr_ratio"]
    return {
        "quality > TVAE": ours["quality"]["score"] > tvae["quality"]["score"],
        "AUC < TVAE": ours["detection_auc"] < tvae["detection_auc"],
        "utility >= TVAE": ours["utility"]["macro_f1"] >= tvae["utility"]["macro_f1"],
        "DCR ratio >= TVAE or >= 1": ours_dcr >= tvae_dcr or ours_dcr >= 1.0,
        "train seconds <= TVAE": ours["train_seconds"] <= tvae["train_seconds"],
    }


# ----------------------------------------------------------------------------------------------- one dataset


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    frame = DATASETS[name].load()
    label = DATASETS[name].label
    table_url = write_table(frame, args.out / name)
    probe = pipeline_config(name, table_url, len(frame), args, synthetic_rows=1_000)
    real = real_rows(probe.data)
    rows = max(1_000, len(real.modelled))
    config = pipeline_config(name, table_url, len(frame), args, synthetic_rows=rows)
    print(
        f"\n== {name}: {len(frame)} rows, {len(real.modelled)} modelled ({real.train} train), "
        f"{len(real.holdout)} holdout; {rows} synthetic rows; {args.epochs} epochs",
        flush=True,
    )

    ours = run_ours(config)
    kinds = load_bundle(ours.model_url).transform.scoring_kinds()
    choice, auto = auto_sampler(ours.report)
    tvae_rows, tvae_seconds = run_tvae(real.modelled, kinds, args, rows)
    samples = {
        f"ours-auto[{choice}]": (generate_ours(ours, auto, rows, args.seed), ours.seconds),
        "ours-prior": (generate_ours(ours, sampler_config(name="prior"), rows, args.seed), ours.seconds),
        "TVAE": (tvae_rows, tvae_seconds),
    }
    systems: dict[str, dict[str, Any]] = {}
    with threadpool_limits(limits=1):  # small samples: one thread per classifier is fastest on 2 cores
        for system, (synthetic, seconds) in samples.items():
            systems[system] = {**score(synthetic, real, kinds, label, args.seed), "train_seconds": seconds}
            save_sample(synthetic, args.out / name / "samples", system)
        systems["real-train ceiling"] = {**ceiling(real, kinds, label, args.seed), "train_seconds": None}
    return {
        "rows": {
            "table": len(frame),
            "modelled": len(real.modelled),
            "train": real.train,
            "holdout": len(real.holdout),
            "synthetic": rows,
        },
        "kinds": kinds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "load_average_1min_at_end": os.getloadavg()[0],  # other work on the machine skews the seconds
        "choice": choice,
        "ours_epoch_seconds": {"mean": float(np.mean(ours.epoch_seconds)), "sum": float(np.sum(ours.epoch_seconds))},
        "tvae_epoch_seconds_mean": tvae_seconds / args.epochs,
        "latent": ours.report["latent"],
        "evaluation_ranking": [(e["name"], round(e["composite"], 4), e["privacy_ok"]) for e in ours.report["samplers"]],
        "systems": systems,
        "targets": targets(systems, f"ours-auto[{choice}]"),
    }


# ----------------------------------------------------------------------------------------------- output


def save_sample(frame: pd.DataFrame, directory: Path, system: str) -> None:
    """The scored rows, for a look at what a score hides (ours-auto[gmm] -> ours-auto.parquet)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = system.split("[")[0].replace(" ", "-")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), directory / f"{stem}.parquet")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def print_table(name: str, result: dict[str, Any]) -> None:
    header = (
        f"{'system':<34} {'quality':>8} {'det.AUC':>8} {'util.F1':>8} {'DCR ratio':>10} {'copies':>7} {'train s':>8}"
    )
    print(
        f"\n{name}  (holdout {result['rows']['holdout']} rows, {result['rows']['synthetic']} synthetic rows, "
        f"{result['epochs']} epochs, batch {result['batch_size']})"
    )
    print(header)
    print("-" * len(header))
    for system, entry in result["systems"].items():
        privacy = entry["privacy"]
        print(
            f"{system:<34} {_fmt(entry['quality']['score']):>8} {_fmt(entry['detection_auc']):>8} "
            f"{_fmt(entry['utility']['macro_f1']):>8} {_fmt(privacy['dcr_ratio'], 2):>10} "
            f"{privacy['exact_copy_share']:>7.1%} {_fmt(entry['train_seconds'], 1):>8}"
        )
    latent, epoch = result["latent"], result["ours_epoch_seconds"]
    print(
        f"ours: {epoch['mean']:.3f} s/epoch inside Ray Train ({epoch['sum']:.1f} s of epochs), "
        f"TVAE {result['tvae_epoch_seconds_mean']:.3f} s/epoch; active units {latent['active_units']}/"
        f"{latent['latent_dim']}, KL(q(z)||p(z)) {_fmt(latent['kl_to_prior_estimate'], 2)}, "
        f"hole share {_fmt(latent['hole_fraction'], 2)}"
    )
    met = [k for k, ok in result["targets"].items() if ok]
    missed = [k for k, ok in result["targets"].items() if not ok]
    print(f"targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}")


def save_results(out: Path, new: dict[str, Any]) -> Path:
    """Merge into results.json, so datasets run one invocation at a time accumulate."""
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(new)
    path.write_text(json.dumps(results, indent=2, default=float))
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="penguins,breast_cancer,wine,digits")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64, help="both systems (both default to 500 otherwise)")
    parser.add_argument("--tvae-threads", type=int, default=1, help="torch threads for TVAE; ours trains on 1 CPU")
    parser.add_argument("--out", type=Path, default=Path("out/bench/quality"))
    args = parser.parse_args(argv)
    unknown = [d for d in args.datasets.split(",") if d not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; pick from {sorted(DATASETS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results, failed = {}, []
    try:
        for name in args.datasets.split(","):
            try:
                results[name] = run_dataset(name, args)
            except Exception:  # one dataset's failure should not lose the others' numbers
                traceback.print_exc()
                failed.append(name)
                continue
            save_results(args.out, {name: results[name]})
    finally:
        shutdown_ray()
    # Printed after Ray is down, so its workers' log lines cannot interleave with the tables.
    for name, result in results.items():
        print_table(name, result)
    print(f"\nresults: {args.out / 'results.json'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
