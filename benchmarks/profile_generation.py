"""Where one generation worker's time goes, per sampler, against the model's own ceiling; no Ray, no long training.

The case: penguins_raw (tests/fixtures) cut to 10 columns, 7 numeric and 3 categorical, nulls in six of them, with
`Species` as the label; the transform fitted as the pipeline fits it, a default-sized `MLPVAE` (latent 16, hidden
[256, 256]) trained a few plain epochs in this process, and the aggregate-posterior statistics computed from it as the
statistics job does. Then, on one torch thread like one worker:

  ceiling   the decoder's forward pass alone (`decode_feature_major`, `--batch-rows` rows at a time) plus Parquet
            encoding of a table with the generated schema
  ours      per sampler, `ShardGenerator.generate` of `--rows` rows in shards of `--rows-per-shard` (the
            pipeline's default 50,000), each then encoded to Parquet with its SHA-256 as `write_shard` does
            before the storage write

and prints rows/s (median of `--repeats`), each sampler's share of the ceiling, and a cProfile of the slowest one.

    python benchmarks/profile_generation.py [--rows 200000] [--rows-per-shard 50000] [--batch-rows 4096]
                                            [--repeats 3] [--epochs 5] [--clock cpu|wall]
                                            [--conditional] [--samplers prior,gaussian,gmm,empirical,conditional]
                                            [--profile-top 15]

Never part of `make test`.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import logging
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

import vae_pipeline
from vae_pipeline.bundle import ModelBundle
from vae_pipeline.config import DataConfig, PipelineConfig, StatisticsConfig, sampler_config
from vae_pipeline.data import open_source
from vae_pipeline.generation.plan import ShardSpec, plan_shards
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.generation.writer import encode_parquet
from vae_pipeline.models.mlp_vae import MLPVAE, MLPVAEConfig, build_model
from vae_pipeline.posterior.aggregate import AggregatePosterior, finalize_posterior
from vae_pipeline.posterior.stats import PosteriorStats
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.split import row_keys
from vae_pipeline.transforms.table import TableTransform

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "fixtures" / "penguins_raw.csv"
LABEL = "Species"
KEPT = [
    "Sample Number",
    LABEL,
    "Island",
    "Culmen Length (mm)",
    "Culmen Depth (mm)",
    "Flipper Length (mm)",
    "Body Mass (g)",
    "Sex",
    "Delta 15 N (o/oo)",
    "Delta 13 C (o/oo)",
]
SAMPLERS = ("prior", "gaussian", "gmm", "empirical", "conditional")


def build_case(epochs: int, conditional: bool, seed: int = 0) -> tuple[ModelBundle, AggregatePosterior, pa.Table]:
    """(bundle, posterior, training table): what a generation worker loads, built in this process."""
    probe = DataConfig(input_url=str(TABLE), format="csv")
    dropped = [name for name in open_source(probe).schema.names if name not in KEPT]
    data_config = DataConfig(
        input_url=str(TABLE),
        format="csv",
        drop_columns=dropped,
        label_column=LABEL,
        column_kinds={"Sample Number": "continuous"},  # else an id: a numbered row is no value to learn
    )
    source = open_source(data_config)
    transform = TableTransform.fit(source.batches(), source.schema, data_config, conditional=conditional, seed=seed)
    table = pa.Table.from_batches(list(source.batches()), schema=source.schema)
    x = torch.from_numpy(transform.transform(table))
    labels = transform.label_codes(table)
    c = torch.from_numpy(transform.condition(labels)) if conditional else None
    model_config = MLPVAEConfig(
        data_dim=transform.output_dim,
        latent_dim=16,
        hidden_dims=[256, 256],
        spans=transform.spans,
        condition_dim=len(transform.label_classes) if conditional else 0,
    )
    torch.manual_seed(seed)
    model = build_model(model_config)
    train(model, x, c, epochs)
    model.eval()
    config = PipelineConfig().with_overrides({"data.label_column": LABEL, "model.conditional": conditional})
    bundle = ModelBundle(model, model_config, transform, config, fingerprint="profile")
    return bundle, posterior_of(bundle, x, c, table, labels), table


def train(model: MLPVAE, x: torch.Tensor, c: torch.Tensor | None, epochs: int, batch_size: int = 64) -> None:
    """A few plain Adam epochs (the pipeline's defaults: lr 1e-3, beta 0.5); only speed is measured here."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=order).split(batch_size):
            optimizer.zero_grad()
            model(x[rows], None if c is None else c[rows], beta=0.5).loss.backward()
            optimizer.step()


def posterior_of(
    bundle: ModelBundle, x: torch.Tensor, c: torch.Tensor | None, table: pa.Table, labels: np.ndarray
) -> AggregatePosterior:
    """The statistics job's result on these rows, in one batch."""
    transform = bundle.transform
    stats = PosteriorStats.empty(latent_dim=16, n_classes=len(transform.label_classes), reservoir_size=10_000)
    with torch.inference_mode():
        mu, logvar = bundle.model.encode(x, c)
    stats.update(mu.double().numpy(), logvar.double().numpy(), row_keys(table, seed=0), labels)
    return finalize_posterior(
        stats, class_labels=transform.label_classes, config=StatisticsConfig(), model_fingerprint=bundle.fingerprint
    )


# CPU seconds of this process by default: on a machine shared with other jobs, wall-clock time measures them too.
# CPU time also counts the threads a library starts on its own (numpy's BLAS), which an idle machine hides from the
# wall clock and a machine full of workers pays for.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


@dataclass(frozen=True)
class Timer:
    clock: Callable[[], float]
    repeats: int

    def median(self, work: Callable[[], object]) -> float:
        """Median seconds of `repeats` calls of `work`."""
        times = []
        for _ in range(self.repeats):
            started = self.clock()
            work()
            times.append(self.clock() - started)
        return statistics.median(times)


def ceiling(bundle: ModelBundle, shards: list[pa.Table], batch: int, timer: Timer) -> tuple[float, float]:
    """(decode seconds, encode seconds) for the shards' rows: the decoder alone, and Parquet of the shards."""
    model = bundle.model
    rows = sum(shard.num_rows for shard in shards)
    latents = torch.randn(batch, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    condition = None
    if bundle.transform.conditional:
        condition = torch.zeros(batch, model.config.condition_dim)
        condition[:, 0] = 1.0

    def decode() -> None:
        with torch.inference_mode():
            for done in range(0, rows, batch):
                take = min(batch, rows - done)
                model.decode_feature_major(latents[:take], None if condition is None else condition[:take])

    def encode() -> None:
        for shard in shards:
            encode_parquet(shard)

    return timer.median(decode), timer.median(encode)


def write_bytes(table: pa.Table) -> str:
    """What `write_shard` does before the storage write: the bytes and their checksum."""
    return hashlib.sha256(encode_parquet(table)).hexdigest()


def time_sampler(
    generator: ShardGenerator, specs: list[ShardSpec], timer: Timer
) -> tuple[float, float, list[pa.Table]]:
    """(generate seconds, write seconds, the shards) for every shard of `specs`."""
    shards = [generator.generate(spec) for spec in specs]  # warm: buffers, lazy imports
    generate = timer.median(lambda: [generator.generate(spec) for spec in specs])
    write = timer.median(lambda: [write_bytes(shard) for shard in shards])
    return generate, write, shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--batch-rows", type=int, default=4_096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--conditional", action="store_true", help="train a CVAE on the label")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--profile-top", type=int, default=15, help="0: no cProfile")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="cpu: this process's CPU time")
    args = parser.parse_args()
    timer = Timer(CLOCKS[args.clock], args.repeats)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # one worker's share, as Ray gives each actor

    bundle, posterior, table = build_case(args.epochs, args.conditional)
    print(f"package {Path(vae_pipeline.__file__).parent}")
    print(f"table {table.num_rows} rows; columns {bundle.transform.column_kinds()}")
    print(f"data_dim {bundle.transform.output_dim}; gmm components {len(posterior.gmm_weights)}")
    specs = plan_shards(rows=args.rows, rows_per_shard=args.rows_per_shard, seed=0)
    rates: dict[str, tuple[float, float]] = {}
    generators: dict[str, ShardGenerator] = {}
    shards: list[pa.Table] = []
    for name in args.samplers.split(","):
        sampler = build_sampler(sampler_config(name=name)).fit(posterior)
        generators[name] = ShardGenerator(bundle, posterior, sampler, args.batch_rows)
        generate, write, shards = time_sampler(generators[name], specs, timer)
        rates[name] = (generate, write)
    decode, encode = ceiling(bundle, shards, args.batch_rows, timer)
    top = args.rows / (decode + encode)
    print(f"\nceiling: decode {args.rows / decode:,.0f} rows/s, encode {args.rows / encode:,.0f} rows/s, "
          f"together {top:,.0f} rows/s")  # fmt: skip
    print(f"{'sampler':<12}{'generate r/s':>14}{'write r/s':>12}{'end to end r/s':>16}{'of ceiling':>12}")
    for name, (generate, write) in rates.items():
        rate = args.rows / (generate + write)
        print(f"{name:<12}{args.rows / generate:>14,.0f}{args.rows / write:>12,.0f}{rate:>16,.0f}{rate / top:>12.0%}")
    if args.profile_top:
        slowest = max(rates, key=lambda name: sum(rates[name]))
        profile_sampler(slowest, generators[slowest], specs, args.profile_top)


def profile_sampler(name: str, generator: ShardGenerator, specs: list[ShardSpec], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for spec in specs:
        write_bytes(generator.generate(spec))
    profiler.disable()
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        body = out.getvalue()
        print(f"\ncProfile of '{name}' (generate + encode), by {order}:\n{body[body.find('   ncalls') :]}")


if __name__ == "__main__":
    main()
