"""Training and generation rows per second on the GPU beside the CPU, through the pipeline's own steps.

On one table (breast_cancer's first N-1 features + its label, repeated to `--train-rows` rows, TVAE's decoder size)
and for each device in `--devices`:

  training    `run_training` (Ray Train, one worker; `training.use_gpu` and bf16/fp16 autocast on the GPU):
              rows seen per second = epochs x training rows / wall-clock seconds of the step (start-up included),
              and within the epochs alone (the seconds each epoch records)
  generation  `run_generation` end to end into Parquet with `--workers` actors (`generation.use_gpu`: one GPU
              each, `generation.gpu_batch_rows` rows per decoder pass); the median of `--repeats` runs

    python benchmarks/gpu.py [--devices cpu,cuda] [--train-rows 200000] [--epochs 3] [--rows 5000000]
                             [--columns 30] [--workers 1] [--gpu-batch-rows 65536] [--out out/bench/gpu]

A device that is not there is the pipeline's own one-line error. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from vae_pipeline.bundle import load_bundle
from vae_pipeline.config import PipelineConfig
from vae_pipeline.errors import VaePipelineError
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.runtime import ensure_ray, shutdown_ray
from vae_pipeline.training.job import run_training


def write_table(columns: int, rows: int, directory: Path) -> str:
    """breast_cancer's first `columns - 1` features and its label, its 569 rows repeated to `rows`."""
    import sklearn.datasets

    frame = sklearn.datasets.load_breast_cancer(as_frame=True).frame
    features = [name for name in frame.columns if name != "target"][: columns - 1]
    table = pa.Table.from_pandas(frame[[*features, "target"]], preserve_index=False)
    repeated = pa.concat_tables([table] * (rows // table.num_rows + 1)).slice(0, rows)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "table.parquet"
    pq.write_table(repeated, path)
    return str(path)


def pipeline_config(root: Path, table_url: str, device: str, args: argparse.Namespace) -> PipelineConfig:
    gpu = device == "cuda"
    return PipelineConfig.model_validate(
        {
            "model_url": str(root / device / "model"),
            "data": {"input_url": table_url, "label_column": "target", "column_kinds": {"target": "categorical"}},
            "model": {"latent_dim": 128, "hidden_dims": [128, 128]},  # TVAE's embedding_dim and decoder widths
            "training": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "use_gpu": gpu},
            "sampler": {"name": "gaussian"},
            "generation": {
                "rows": args.rows,
                "rows_per_shard": args.rows_per_shard,
                "num_workers": args.workers,
                "use_gpu": gpu,
                "gpu_batch_rows": args.gpu_batch_rows,
                "output_url": str(root / device / "synthetic"),
                "seed": args.seed,
                "overwrite": True,
            },
            "ray": {"num_cpus": os.cpu_count() or 2},
        }
    )


def measure(device: str, table_url: str, args: argparse.Namespace) -> dict[str, Any]:
    config = pipeline_config(args.out, table_url, device, args)
    shutil.rmtree(config.model_url, ignore_errors=True)  # a rerun would find the bundle and train nothing
    train_rows = pq.read_metadata(table_url).num_rows * (
        1 - config.data.validation_fraction - config.data.holdout_share
    )
    started = time.perf_counter()
    model_url = run_training(config)
    train_seconds = time.perf_counter() - started
    epochs = load_bundle(model_url).metrics  # each epoch's rows and seconds, start-up excluded
    statistics_url = run_statistics(config, model_url=model_url)
    runs = []
    for _ in range(args.repeats):
        shutil.rmtree(config.generation.output_url, ignore_errors=True)
        started = time.perf_counter()
        run_generation(config, model_url=model_url, statistics_url=statistics_url)
        runs.append(time.perf_counter() - started)
    manifest = read_manifest(config.generation.output_url)
    assert manifest is not None
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "training_rows_per_s": args.epochs * train_rows / train_seconds,
        "training_seconds": train_seconds,
        "training_epoch_rows_per_s": sum(e["train_rows"] for e in epochs) / sum(e["seconds"] for e in epochs),
        "generation_rows_per_s": manifest.rows / statistics.median(runs),
        "generation_seconds": runs,
        "workers": manifest.extra.get("workers"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--columns", type=int, default=30, help="breast_cancer's first N-1 features + label")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rows", type=int, default=5_000_000, help="generated rows")
    parser.add_argument("--rows-per-shard", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=1, help="generation actors (one GPU each on cuda)")
    parser.add_argument("--gpu-batch-rows", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/bench/gpu"))
    args = parser.parse_args(argv)
    args.devices = args.devices.split(",")
    if not set(args.devices) <= {"cpu", "cuda"} or not 2 <= args.columns <= 31:
        parser.error("--devices takes cpu and/or cuda; --columns lies in [2, 31]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    table_url = write_table(args.columns, args.train_rows, args.out)
    try:
        ensure_ray(pipeline_config(args.out, table_url, "cpu", args).ray)
        results = [measure(device, table_url, args) for device in args.devices]
    except VaePipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_ray()
    print(f"\n{args.columns} columns, {args.train_rows:,} input rows, {args.epochs} epochs, {args.rows:,} generated")
    print(f"{'device':<8} {'training rows/s':>16} {'in epochs':>10} {'generation rows/s':>18}  gpu")
    for result in results:
        line = f"{result['training_rows_per_s']:>16,.0f} {result['training_epoch_rows_per_s']:>10,.0f}"
        line += f" {result['generation_rows_per_s']:>18,.0f}"
        print(f"{result['device']:<8} {line}  {result['gpu'] or '-'}")
    if len(results) == 2:
        cpu, gpu = results
        print(
            f"cuda / cpu: training {gpu['training_rows_per_s'] / cpu['training_rows_per_s']:.1f}x, "
            f"generation {gpu['generation_rows_per_s'] / cpu['generation_rows_per_s']:.1f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({"benchmark": "gpu", "results": results}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
