"""Generation throughput: our rows per second into Parquet against the ceiling and against SDV's TVAE.

For each table (breast_cancer's first N-1 features + its label, so `--columns 10,30` are 10- and 30-column tables),
in one run on this machine and on the same schema:

  (a) ceiling   the decoder's forward pass alone (at the fastest batch size found) plus Parquet encoding of a
                table with the same columns, one thread like one worker; and the same work in W processes at once
  (b) ours      `run_generation` end to end into Parquet (Ray already started; actor start-up, loading, every shard
                and the manifest included), with 1 and 2 workers, which is also (d)
  (c) TVAE      `TVAESynthesizer.sample(n)` in memory, fitted on the same table

Our model gets TVAE's decoder size (latent 128, hidden (128, 128)); both train a few epochs, since only speed is
measured. See benchmarks/README.md for the last results.

    python benchmarks/generation.py [--rows 2000000] [--columns 10,30] [--epochs 3] [--workers 1,2]
                                    [--batch-rows 4096] [--repeats 3] [--out out/bench/generation]

Needs SDV (`make bench-install`); never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from vae_pipeline.bundle import default_statistics_url
from vae_pipeline.config import PipelineConfig
from vae_pipeline.generation.job import load_artifacts, run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.generation.writer import ShardRecord, encode_parquet
from vae_pipeline.posterior.aggregate import JSON_NAME
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.runtime import ensure_ray, shutdown_ray
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.training.job import run_training

SCAN_BATCHES = (1_024, 2_048, 4_096, 8_192, 16_384, 65_536)
TARGETS = {"ceiling_share": 0.70, "tvae_x": {10: 3.0, 30: 8.0}, "scaling_2w": 1.7}


# ----------------------------------------------------------------------------------------------- the tables


def write_table(columns: int, directory: Path) -> str:
    """breast_cancer's first `columns - 1` features (float64) and its 0/1 label."""
    import sklearn.datasets

    frame = sklearn.datasets.load_breast_cancer(as_frame=True).frame
    features = [name for name in frame.columns if name != "target"][: columns - 1]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "table.parquet"
    pq.write_table(pa.Table.from_pandas(frame[[*features, "target"]], preserve_index=False), path)
    return str(path)


def pipeline_config(root: Path, table_url: str, args: argparse.Namespace, workers: int = 1) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "model_url": str(root / "model"),
            "data": {"input_url": table_url, "label_column": "target", "column_kinds": {"target": "categorical"}},
            "model": {"latent_dim": 128, "hidden_dims": [128, 128]},  # TVAE's embedding_dim and decoder widths
            "training": {"epochs": args.epochs, "batch_size": 500, "seed": args.seed},
            "sampler": {"name": args.sampler},
            "generation": {
                "rows": args.rows,
                "rows_per_shard": args.rows_per_shard,
                "num_workers": workers,
                "batch_rows": args.batch_rows,
                "output_url": str(root / f"synthetic-{workers}w"),
                "seed": args.seed,
                "overwrite": True,
            },
            "ray": {"num_cpus": os.cpu_count() or 2},
        }
    )


def train_ours(config: PipelineConfig, reuse: bool) -> tuple[str, str]:
    statistics_url = default_statistics_url(config.model_url)
    if reuse and Path(statistics_url, JSON_NAME).exists():
        return config.model_url, statistics_url
    shutil.rmtree(config.model_url, ignore_errors=True)  # a rerun would resume and train nothing
    model_url = run_training(config)
    return model_url, run_statistics(config, model_url=model_url)


# ----------------------------------------------------------------------------------------------- (a) the ceiling


@dataclass(frozen=True)
class Worker:
    """What one generation worker holds, loaded in this process: a generator and a shard table of real output."""

    generator: ShardGenerator
    shard: pa.Table


def load_worker(model_url: str, statistics_url: str, config: PipelineConfig) -> Worker:
    bundle, posterior = load_artifacts(model_url, statistics_url)
    sampler = build_sampler(config.sampler).fit(posterior)
    generator = ShardGenerator(bundle, posterior, sampler, config.generation.batch_rows)
    return Worker(generator, generator.generate(ShardSpec(0, config.generation.rows_per_shard, config.generation.seed)))


def decode_seconds(worker: Worker, rows: int, batch: int) -> float:
    """The decoder's forward pass alone over `rows` standard-normal latents, `batch` rows at a time."""
    model = worker.generator.bundle.model
    latents = torch.randn(batch, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    with torch.inference_mode():
        for done in range(0, rows, batch):
            model.decode(latents[: min(batch, rows - done)])
    return time.perf_counter() - started


def encode_seconds(worker: Worker, rows: int) -> float:
    """Parquet encoding (our writer's settings) of `rows` rows with the generated columns."""
    shard, done = worker.shard, 0
    started = time.perf_counter()
    while done < rows:
        encode_parquet(shard.slice(0, min(shard.num_rows, rows - done)))
        done += shard.num_rows
    return time.perf_counter() - started


def scan_decoder(worker: Worker, rows: int) -> dict[int, float]:
    """Decoder rows per second at each batch size (best of three)."""
    return {b: rows / min(decode_seconds(worker, rows, b) for _ in range(3)) for b in SCAN_BATCHES}


def ceiling_seconds(worker: Worker, rows: int, batch: int) -> dict[str, float]:
    decode, encode = decode_seconds(worker, rows, batch), encode_seconds(worker, rows)
    return {"decode": decode, "encode": encode, "total": decode + encode}


def _ceiling_child(paths: tuple[str, str], config_json: dict[str, Any], rows: int, batch: int, barrier: Any) -> float:
    torch.set_num_threads(1)
    worker = load_worker(*paths, PipelineConfig.model_validate(config_json))
    barrier.wait()  # every process starts its timed work together
    return ceiling_seconds(worker, rows, batch)["total"]


def parallel_ceiling(paths: tuple[str, str], config: PipelineConfig, rows: int, batch: int, processes: int) -> float:
    """Rows per second of `processes` processes doing the ceiling's work at once, `rows` in all."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
        barrier = manager.Barrier(processes)
        share = rows // processes
        futures = [
            pool.submit(_ceiling_child, paths, config.to_json(), share, batch, barrier) for _ in range(processes)
        ]
        seconds = [f.result() for f in futures]
    return share * processes / max(seconds)


# ----------------------------------------------------------------------------------------------- (b, d) ours


def in_process_rate(worker: Worker, rows: int, rows_per_shard: int) -> float:
    """One worker's loop without Ray: generate a shard, encode it (no storage write)."""
    started, done, index = time.perf_counter(), 0, 0
    while done < rows:
        shard = worker.generator.generate(ShardSpec(index, min(rows_per_shard, rows - done), 0))
        encode_parquet(shard)
        done, index = done + shard.num_rows, index + 1
    return rows / (time.perf_counter() - started)


def scan_ours(worker: Worker, rows: int, rows_per_shard: int) -> dict[int, float]:
    """One worker's in-process rows per second at each decode batch size (best of two)."""
    rates = {}
    for batch in SCAN_BATCHES:
        generator = ShardGenerator(worker.generator.bundle, worker.generator.posterior, worker.generator.sampler, batch)
        rates[batch] = max(in_process_rate(Worker(generator, worker.shard), rows, rows_per_shard) for _ in range(2))
    return rates


def run_ours(config: PipelineConfig, model_url: str, statistics_url: str) -> dict[str, Any]:
    """One `run_generation`: wall-clock rows/s, the rate between the first and last shard, the workers' own."""
    shutil.rmtree(config.generation.output_url, ignore_errors=True)  # a repeat of a committed run would do nothing
    finished: list[float] = []

    def on_shard(record: ShardRecord) -> None:
        finished.append(time.perf_counter())

    started = time.perf_counter()
    run_generation(config, model_url=model_url, statistics_url=statistics_url, on_shard=on_shard)
    seconds = time.perf_counter() - started
    manifest = read_manifest(config.generation.output_url)
    assert manifest is not None
    workers = manifest.extra.get("workers") or []
    rows_per_shard = config.generation.rows_per_shard
    steady = (len(finished) - 1) * rows_per_shard / (finished[-1] - finished[0]) if len(finished) > 1 else None
    return {
        "rows_per_s": manifest.rows / seconds,
        "steady_rows_per_s": steady,
        "worker_rows_per_s": [w["rows"] / w["seconds"] for w in workers if w.get("seconds")],
        "seconds": seconds,
        "bytes": manifest.bytes,
    }


# ----------------------------------------------------------------------------------------------- (c) TVAE


def tvae_rate(table_url: str, args: argparse.Namespace) -> tuple[float, int]:
    """TVAE's in-memory `sample()` rows per second (median of the repeats) and the torch threads it had."""
    from sdv.metadata import Metadata
    from sdv.single_table import TVAESynthesizer

    frame = pq.read_table(table_url).to_pandas()
    columns = {name: {"sdtype": "categorical" if name == "target" else "numerical"} for name in frame.columns}
    metadata = Metadata.load_from_dict({"tables": {"table": {"columns": columns}}}, single_table_name="table")
    threads = args.tvae_threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(args.seed)
        synthesizer = TVAESynthesizer(metadata, epochs=args.epochs, enable_gpu=False)
        synthesizer.fit(frame)
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            synthesizer.sample(num_rows=args.tvae_rows)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return args.tvae_rows / statistics.median(seconds), threads


# ----------------------------------------------------------------------------------------------- one table


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall-clock rate, with every run's rate beside it."""
    ordered = sorted(runs, key=lambda r: r["rows_per_s"])
    return {**ordered[len(ordered) // 2], "all_rows_per_s": [r["rows_per_s"] for r in runs]}


def run_table(columns: int, args: argparse.Namespace) -> dict[str, Any]:
    root = args.out / f"c{columns}"
    table_url = write_table(columns, root)
    config = pipeline_config(root, table_url, args)
    print(f"\n== {columns} columns: training ours ({args.epochs} epochs) ...", flush=True)
    model_url, statistics_url = train_ours(config, args.reuse_model)
    torch.set_num_threads(1)  # measured like one worker (Ray gives each actor one CPU)
    worker = load_worker(model_url, statistics_url, config)
    scan = scan_decoder(worker, min(args.rows, 262_144))
    batch = max(scan, key=lambda b: scan[b])
    ceiling = [ceiling_seconds(worker, args.rows, batch) for _ in range(args.repeats)]
    ceiling_1 = args.rows / statistics.median(c["total"] for c in ceiling)
    in_process = statistics.median(in_process_rate(worker, args.rows, args.rows_per_shard) for _ in range(args.repeats))
    ours_scan = scan_ours(worker, min(args.rows, 500_000), args.rows_per_shard)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"== {columns} columns: ceiling {ceiling_1:,.0f} rows/s; parallel ceilings and runs ...", flush=True)
    paths = (model_url, statistics_url)
    ceilings = {w: ceiling_1 if w == 1 else parallel_ceiling(paths, config, args.rows, batch, w) for w in args.workers}
    ours = {}
    for workers in args.workers:
        runs = [run_ours(pipeline_config(root, table_url, args, workers), *paths) for _ in range(args.repeats)]
        ours[workers] = median_run(runs)
    tvae, tvae_threads = tvae_rate(table_url, args)
    bundle = worker.generator.bundle
    return {
        "columns": columns,
        "data_dim": bundle.model_config.data_dim,
        "rows": args.rows,
        "batch_rows": args.batch_rows,
        "decoder_scan_rows_per_s": scan,
        "ceiling_batch": batch,
        "ceiling_parts_s": {k: statistics.median(c[k] for c in ceiling) for k in ("decode", "encode")},
        "ceiling_rows_per_s": ceilings,
        "in_process_rows_per_s": in_process,
        "in_process_scan_rows_per_s": ours_scan,
        "ours": ours,
        "tvae_rows_per_s": tvae,
        "tvae_threads": tvae_threads,
        "load_average_1min_at_end": os.getloadavg()[0],
        "targets": targets(columns, ceilings, ours, tvae),
    }


def targets(columns: int, ceilings: dict[int, float], ours: dict[int, Any], tvae: float) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for workers, run in ours.items():
        share = run["rows_per_s"] / ceilings[workers]
        checks[f">= 70% of ceiling, {workers} worker(s)"] = (share, share >= TARGETS["ceiling_share"])
    most = max(ours)
    needed = TARGETS["tvae_x"].get(columns)  # type: ignore[attr-defined]
    if needed is not None:
        times = ours[most]["rows_per_s"] / tvae
        checks[f">= {needed:g}x TVAE sample(), {most} worker(s)"] = (times, times >= needed)
    if 1 in ours and 2 in ours:
        scaling = ours[2]["rows_per_s"] / ours[1]["rows_per_s"]
        checks[">= 1.7x from 1 to 2 workers"] = (scaling, scaling >= TARGETS["scaling_2w"])
    return checks


# ----------------------------------------------------------------------------------------------- output


def _line(label: str, *rates: float | None) -> None:
    print(f"{label:<60}" + "".join(f" {rate:>11,.0f}" if rate is not None else f" {'-':>11}" for rate in rates))


def print_table(result: dict[str, Any]) -> None:
    rows, parts, ceiling = result["rows"], result["ceiling_parts_s"], result["ceiling_rows_per_s"]
    print(
        f"\n{result['columns']} columns ({result['data_dim']} decoder outputs), {rows:,} rows, "
        f"batch_rows {result['batch_rows']}, load average {result['load_average_1min_at_end']:.1f}"
    )
    scan = ", ".join(f"{b}: {r / 1e3:,.0f}k" for b, r in result["decoder_scan_rows_per_s"].items())
    print(f"decoder alone, rows/s by batch size (one thread): {scan}")
    scan = ", ".join(f"{b}: {r / 1e3:,.0f}k" for b, r in result["in_process_scan_rows_per_s"].items())
    print(f"ours in one process, rows/s by batch_rows (one thread): {scan}")
    print(f"{'measure':<60} {'rows/s':>11}")
    print("-" * 72)
    decode, encode = rows / parts["decode"] / 1e3, rows / parts["encode"] / 1e3
    batch = result["ceiling_batch"]
    _line(f"(a) ceiling, 1 thread (decode@{batch} {decode:,.0f}k/s + Parquet {encode:,.0f}k/s)", ceiling[1])
    for workers, rate in ceiling.items():
        if workers != 1:
            _line(f"(a) ceiling, {workers} processes at once", rate)
    _line("    ours in one process, 1 thread, no Ray (generate + encode)", result["in_process_rows_per_s"])
    for workers, run in result["ours"].items():
        _line(f"(b/d) ours end to end, {workers} worker(s), median of {len(run['all_rows_per_s'])}", run["rows_per_s"])
        _line("      between the first and the last shard", run["steady_rows_per_s"])
        _line("      sum of the workers' rates while busy", sum(run["worker_rows_per_s"]))
    _line(f"(c) TVAE sample() in memory, {result['tvae_threads']} torch thread(s)", result["tvae_rows_per_s"])
    for name, (value, ok) in result["targets"].items():
        print(f"target {name}: {value:.2f} -> {'met' if ok else 'MISSED'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--columns", default="10,30", help="table widths: breast_cancer's first N-1 features + label")
    parser.add_argument("--epochs", type=int, default=3, help="ours and TVAE; speed does not depend on it")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batch-rows", type=int, default=4_096, help="generation.batch_rows for our runs")
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--sampler", default="gaussian", choices=["gaussian", "prior", "gmm", "empirical"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measure; the median is reported")
    parser.add_argument("--tvae-rows", type=int, default=200_000)
    parser.add_argument("--tvae-threads", type=int, default=0, help="0: torch's default (all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-model", action="store_true", help="keep a model trained by an earlier run")
    parser.add_argument("--out", type=Path, default=Path("out/bench/generation"))
    args = parser.parse_args(argv)
    args.columns = [int(c) for c in args.columns.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    if any(c < 2 or c > 31 for c in args.columns):
        parser.error("--columns must lie in [2, 31] (breast_cancer has 30 features and a label)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results = []
    try:
        ensure_ray(pipeline_config(args.out, "unused", args).ray)  # started once, outside every timing
        results = [run_table(columns, args) for columns in args.columns]
    finally:
        shutdown_ray()
    for result in results:  # after Ray is down, so its log lines cannot interleave with the tables
        print_table(result)
    for result in results:
        print(json.dumps({"benchmark": "generation", **result}, default=float))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
