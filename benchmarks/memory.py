"""Bounded memory: peak resident memory of generation workers (1M vs 20M rows) and of the streaming jobs.

1. A model with TVAE's decoder size is trained on a breast_cancer table (as in benchmarks/generation.py).
2. Generation of `--small-rows` and then `--large-rows` rows with the same `rows_per_shard`: a worker holds one
   shard at a time, so its peak must not grow with the total.
3. `--input-rows` rows generated with that model become a multi-million-row input table; training (one epoch) and
   the statistics job then run over it. Both stream it through Ray Data: their processes' peaks should stay far
   below the table's size in memory.

Peaks come from two places: `ru_maxrss` of each generation worker (the manifest's `workers` entries), and a
sampler thread that reads the resident set size (RSS) of this driver and of every process it started (Ray's
raylet, GCS and worker processes) every 0.1 s during each step. RSS counts pages shared with other processes
(libraries, Ray's object store in /dev/shm) in every process that touches them; `shared` is printed beside it.

The local Ray instance gets `--ray-cpus` logical CPUs (default 4, on this 2-core machine too): training over a
large input streams it, and needs a CPU for its Train worker, one for the encoding actor and one to read with;
with `ray.num_cpus: 2` it waits forever for the read tasks (Ray Data warns "Cluster resources are not enough").

    python benchmarks/memory.py [--small-rows 1000000] [--large-rows 20000000] [--input-rows 5000000]
                                [--columns 30] [--workers 2] [--no-train] [--ray-cpus 4] [--out out/bench/memory]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as pa_ds

from vae_pipeline.config import PipelineConfig
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.runtime import ensure_ray, shutdown_ray
from vae_pipeline.training.job import run_training

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import write_table  # the same tables as the throughput benchmark

MIB = 1024**2


# ----------------------------------------------------------------------------------------------- RSS sampling


@dataclass
class ProcessPeak:
    pid: int
    title: str  # Ray's process title (ray::GenerationActor.write, ray::IDLE, ...): the most specific one seen
    rss: int = 0
    shared: int = 0  # resident pages shared with other processes, at the RSS peak


@dataclass
class Peaks:
    processes: dict[int, ProcessPeak] = field(default_factory=dict)

    def observe(self, process: Any) -> None:
        import psutil

        try:
            memory = process.memory_info()
            title = " ".join(process.cmdline())[:80] or process.name()
        except psutil.Error:
            return
        peak = self.processes.setdefault(process.pid, ProcessPeak(process.pid, title))
        if "IDLE" in peak.title or not peak.title.startswith("ray::"):
            peak.title = title
        if memory.rss > peak.rss:
            peak.rss, peak.shared = memory.rss, getattr(memory, "shared", 0)

    def matching(self, predicate: Callable[[ProcessPeak], bool]) -> list[ProcessPeak]:
        return sorted((p for p in self.processes.values() if predicate(p)), key=lambda p: -p.rss)


@contextmanager
def sampled(interval: float = 0.1) -> Iterator[Peaks]:
    """Sample this process and all its descendants (the local Ray instance) until the block ends."""
    import psutil  # Ray bundles it and puts it on sys.path when imported (above, through vae_pipeline)

    peaks, stop = Peaks(), threading.Event()
    driver = psutil.Process()

    def loop() -> None:
        while not stop.is_set():
            peaks.observe(driver)
            for child in driver.children(recursive=True):
                peaks.observe(child)
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------------------------- steps


def base_config(args: argparse.Namespace, table_url: str, model_url: str, epochs: int) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "model_url": model_url,
            "data": {"input_url": table_url, "label_column": "target", "column_kinds": {"target": "categorical"}},
            "model": {"latent_dim": 128, "hidden_dims": [128, 128]},
            "training": {"epochs": epochs, "batch_size": 500, "num_workers": 1},
            "sampler": {"name": "gaussian"},
            "generation": {"rows_per_shard": args.rows_per_shard, "num_workers": args.workers, "overwrite": True},
            "ray": {"num_cpus": args.ray_cpus},
        }
    )


def report(result: dict[str, Any]) -> dict[str, Any]:
    """Print a finished step at once (a later step that fails or hangs keeps the earlier numbers)."""
    print(f"done: {result['step']}: {json.dumps(result, default=float)}", flush=True)
    return result


def timed(step: Callable[[], Any]) -> tuple[Any, Peaks, float]:
    with sampled() as peaks:
        started = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - started
    return result, peaks, seconds


def summary(name: str, peaks: Peaks, seconds: float, **extra: Any) -> dict[str, Any]:
    """The driver's peak and every Ray worker process's peak (raylet, GCS and dashboard left out)."""
    workers = peaks.matching(lambda p: p.pid != os.getpid() and p.title.startswith("ray::"))
    return {
        "step": name,
        "seconds": round(seconds, 1),
        "driver_peak_rss": peaks.processes[os.getpid()].rss,
        "driver_peak_shared": peaks.processes[os.getpid()].shared,
        "worker_peaks": [{"pid": p.pid, "title": p.title, "rss": p.rss, "shared": p.shared} for p in workers],
        **extra,
    }


def generate(config: PipelineConfig, model_url: str, rows: int, output_url: str) -> dict[str, Any]:
    config = config.with_overrides({"generation.rows": rows, "generation.output_url": output_url})
    _, peaks, seconds = timed(lambda: run_generation(config, model_url=model_url))
    manifest = read_manifest(output_url)
    assert manifest is not None
    actors = manifest.extra.get("workers") or []
    pids = {w["pid"] for w in actors}
    return report(
        summary(
            f"generate {rows:,} rows",
            peaks,
            seconds,
            rows=rows,
            bytes_on_disk=manifest.bytes,
            generation_workers=[
                {**w, "sampled_peak_rss": peaks.processes[w["pid"]].rss if w["pid"] in peaks.processes else None}
                for w in actors
            ],
            sampled_generation_peak=max((p.rss for p in peaks.processes.values() if p.pid in pids), default=None),
        )
    )


def input_size(url: str) -> dict[str, int]:
    """Rows, bytes on disk and bytes as Arrow in memory (from one fragment's decoded size, scaled)."""
    dataset = pa_ds.dataset(url, format="parquet")
    fragments = list(dataset.get_fragments())
    first = fragments[0].to_table()
    rows = dataset.count_rows()
    disk = sum(os.path.getsize(f.path) for f in fragments)
    return {"rows": rows, "bytes_on_disk": disk, "arrow_bytes": int(first.nbytes * rows / first.num_rows)}


def big_input_bundle(args: argparse.Namespace, model_url: str, input_url: str) -> tuple[PipelineConfig, dict[str, Any]]:
    """A bundle whose data section is the big input: trained on it for one epoch, or (--no-train) the small
    model saved again with its data section pointed at the input, which the statistics job then reads."""
    from vae_pipeline.bundle import load_bundle, save_bundle

    config = base_config(args, input_url, str(args.out / "model-input"), epochs=1)
    shutil.rmtree(config.model_url, ignore_errors=True)
    if not args.train:
        bundle = load_bundle(model_url)
        save_bundle(config.model_url, bundle.model, bundle.model_config, bundle.transform, config, bundle.metrics)
        return config, {}
    _, peaks, seconds = timed(lambda: run_training(config))
    return config, report(summary("train, 1 epoch over the input", peaks, seconds))


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, int]]:
    table_url = write_table(args.columns, args.out / "table")
    config = base_config(args, table_url, str(args.out / "model"), epochs=args.epochs)
    shutil.rmtree(config.model_url, ignore_errors=True)
    ensure_ray(config.ray)
    model_url = run_training(config)
    run_statistics(config, model_url=model_url)
    results = [
        generate(config, model_url, rows, str(args.out / f"synthetic-{rows}"))
        for rows in (args.small_rows, args.large_rows)
    ]
    input_url = str(args.out / "input")
    results.append(generate(config, model_url, args.input_rows, input_url))
    size = input_size(input_url)
    print(f"input: {json.dumps(size)}", flush=True)
    big, training = big_input_bundle(args, model_url, input_url)
    if training:
        results.append(training)
    _, peaks, seconds = timed(lambda: run_statistics(big, model_url=big.model_url))
    results.append(report(summary("statistics job over the input", peaks, seconds)))
    return results, size


# ----------------------------------------------------------------------------------------------- output


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def print_results(results: list[dict[str, Any]], size: dict[str, int], args: argparse.Namespace) -> None:
    print(
        f"\ninput for training and statistics: {size['rows']:,} rows, {size['bytes_on_disk'] / MIB:,.0f} MiB on disk, "
        f"{size['arrow_bytes'] / MIB:,.0f} MiB as Arrow in memory ({args.columns} columns)"
    )
    print("peak RSS in MiB, and in brackets its part not shared with other processes (Ray's object store is shared)")
    print(f"{'step':<32} {'s':>6} {'driver':>13}  largest Ray worker processes")
    print("-" * 118)
    for result in results:
        workers = ", ".join(
            f"{w['title'].removeprefix('ray::').split(' ')[0].split('.')[0][:26]} {mib(w['rss'])} "
            f"({mib(w['rss'] - w['shared'])})"
            for w in result["worker_peaks"][:3]
        )
        shared = result.get("driver_peak_shared")
        private = None if shared is None else result["driver_peak_rss"] - shared
        driver = f"{mib(result['driver_peak_rss'])} ({mib(private)})"
        print(f"{result['step']:<32} {result['seconds']:>6.1f} {driver:>13}  {workers}")
    small, large = results[0], results[1]
    print("\ngeneration workers: peak RSS from the manifest (ru_maxrss), sampled in brackets")
    for result in (small, large):
        shown = "; ".join(
            f"{w['shards']} shards {mib(w['peak_rss_bytes'])} ({mib(w['sampled_peak_rss'])})"
            for w in result["generation_workers"]
        )
        print(f"  {result['rows']:>11,} rows: {shown}")
    growth = max_peak(large) / max_peak(small) - 1
    verdict = "met" if abs(growth) <= 0.10 else "MISSED"
    print(
        f"target: worker peak within 10% from {small['rows']:,} to {large['rows']:,} rows: {growth:+.1%} -> {verdict}"
    )


def max_peak(result: dict[str, Any]) -> int:
    return max(w["peak_rss_bytes"] for w in result["generation_workers"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-rows", type=int, default=1_000_000)
    parser.add_argument("--large-rows", type=int, default=20_000_000)
    parser.add_argument("--input-rows", type=int, default=5_000_000, help="rows of the training/statistics input")
    parser.add_argument("--columns", type=int, default=30, help="breast_cancer's first N-1 features + label")
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="for the model that generates")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip training on the big input")
    parser.add_argument(
        "--ray-cpus",
        type=int,
        default=max(4, os.cpu_count() or 1),
        help="logical CPUs of the local Ray instance; training that streams needs one for its Train worker, one for "
        "the encoding actor and more for read tasks (with 2 it waits forever for a CPU to read with)",
    )
    parser.add_argument("--out", type=Path, default=Path("out/bench/memory"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        results, size = run(args)
    finally:
        shutdown_ray()
    print_results(results, size, args)
    print(json.dumps({"benchmark": "memory", "input": size, "steps": results}, default=float))
    (args.out / "results.json").write_text(json.dumps({"input": size, "steps": results}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
