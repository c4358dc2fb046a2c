"""Quality benchmark: our pipeline (the VAE, aggregate-posterior and learned samplers, `auto`) against SDV's
TVAE.

Both systems see the same split of the same table: our seeded row split keeps a holdout that neither system trains
on; TVAE is fitted on every non-holdout row (our train + validation rows); both train for the same number of epochs
with the same batch size and seed, sample the same number of rows, and are scored on the same holdout with the same
functions (`vae_pipeline.evaluation.metrics`). Every sampler the evaluation considered (the learned flow and
diffusion priors included, diffusion also at other step counts and as TabSyn samples it) is scored the same way,
with the share of the TVAE-to-ceiling quality gap it closes; gaussian, flow and diffusion are timed generating rows
on one thread. See benchmarks/README.md for what is measured and the last results.

    python benchmarks/quality.py [--datasets penguins,breast_cancer,wine,digits] [--epochs N] [--seed S]
                                 [--batch-size B] [--diffusion-steps 10,20,30] [--speed-rows N]
                                 [--out out/bench/quality]

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
from vae_pipeline.executor import one_thread
from vae_pipeline.generation.job import load_artifacts
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.runtime import shutdown_ray
from vae_pipeline.samplers.registry import LEARNED
from vae_pipeline.samplers.store import fitted_sampler, prior_meta
from vae_pipeline.split import Split, split_codes
from vae_pipeline.training.job import run_training

REPO = Path(__file__).resolve().parents[1]
SMALL_TABLE_ROWS = 1_000  # below this the holdout is 20% of the rows instead of 10%, so it can be scored
GAP_TARGET = 0.75  # auto closes at least this share of the TVAE-to-ceiling quality gap (issue 14)
# The same trained denoiser sampled as TabSyn samples it: EDM's Heun sampler, 50 steps (99 denoiser calls).
TABSYN_SAMPLER = "diffusion@heun,steps=50"
SPEED_TARGET = 1 / 3  # flow and diffusion generate at least a third of gaussian's rows per second (issue 14)


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
    statistics_seconds: float  # run_statistics wall, the learned priors' training included


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
    started = time.perf_counter()
    statistics_url = run_statistics(config, model_url=model_url)
    statistics_seconds = time.perf_counter() - started
    report_url = run_evaluation(config, model_url=model_url, statistics_url=statistics_url)
    report = json.loads(Path(report_url).read_text())
    epoch_seconds = [float(m["seconds"]) for m in load_bundle(model_url).metrics]
    return OursRun(model_url, statistics_url, report, seconds, epoch_seconds, statistics_seconds)


def auto_sampler(report: dict[str, Any]) -> tuple[str, SamplerConfig]:
    """The evaluation's choice; when no sampler passed the privacy guard, the top-ranked one (marked so)."""
    choice = report["choice"]
    if choice is not None:
        return choice["name"], parse_sampler(choice["sampler"])
    best = report["samplers"][0]
    return f"{best['name']}, no sampler passed the privacy guard", parse_sampler(best["sampler"])


def generate_ours(run: OursRun, sampler: SamplerConfig, rows: int, seed: int) -> pd.DataFrame:
    bundle, posterior = load_artifacts(run.model_url, run.statistics_url)
    fitted = fitted_sampler(sampler, posterior, run.statistics_url)  # a learned prior is loaded from the store
    table = ShardGenerator(bundle, posterior, fitted).generate(ShardSpec(index=0, rows=rows, seed=seed))
    return table.to_pandas()


def sampler_variants(report: dict[str, Any], diffusion_steps: list[int], default: int) -> dict[str, SamplerConfig]:
    """`ours/<candidate>` for every sampler the evaluation scored (the prior is `ours-prior`), and diffusion at
    each other step count than its `default` (`ours/diffusion@steps=N`), so the steps' cost in quality shows too."""
    found = {f"ours/{e['name']}": parse_sampler(e["sampler"]) for e in report["samplers"] if e["name"] != "prior"}
    if "ours/diffusion" in found:
        for steps in diffusion_steps:
            if steps != (getattr(found["ours/diffusion"], "steps", None) or default):
                found[f"ours/diffusion@steps={steps}"] = sampler_config("diffusion", steps=steps)
        found[f"ours/{TABSYN_SAMPLER}"] = sampler_config("diffusion", steps=50, solver="heun")
    return found


# ----------------------------------------------------------------------------------------------- generation speed


def generation_speed(run: OursRun, args: argparse.Namespace) -> dict[str, Any]:
    """Rows per second of `ShardGenerator.generate` (the generation workers' code path) on one thread, for gaussian,
    flow and diffusion at each step count: the median of `--speed-repeats` shards of `--speed-rows` rows after one
    warm-up shard, timed in this process's CPU seconds (other work on the machine moves it less than wall time)."""
    bundle, posterior = load_artifacts(run.model_url, run.statistics_url)
    configs = {"gaussian": sampler_config("gaussian"), "flow": sampler_config("flow")}
    configs |= {f"diffusion@steps={s}": sampler_config("diffusion", steps=s) for s in args.diffusion_steps}
    configs[TABSYN_SAMPLER] = sampler_config("diffusion", steps=50, solver="heun")
    rates: dict[str, dict[str, float]] = {}
    with one_thread():
        for name, sampler in configs.items():
            generator = ShardGenerator(bundle, posterior, fitted_sampler(sampler, posterior, run.statistics_url))
            generator.generate(ShardSpec(index=0, rows=min(args.speed_rows, 4_096), seed=args.seed))
            cpu, wall = [], []
            for repeat in range(args.speed_repeats):
                started_cpu, started_wall = time.process_time(), time.perf_counter()
                generator.generate(ShardSpec(index=repeat, rows=args.speed_rows, seed=args.seed + repeat))
                cpu.append(time.process_time() - started_cpu)
                wall.append(time.perf_counter() - started_wall)
            rates[name] = {
                "rows_per_s": args.speed_rows / float(np.median(cpu)),
                "rows_per_s_wall": args.speed_rows / float(np.median(wall)),
            }
    for entry in rates.values():
        entry["vs_gaussian"] = entry["rows_per_s"] / rates["gaussian"]["rows_per_s"]
    default = prior_meta(run.statistics_url, "diffusion")["settings"]["steps"]
    return {"rows": args.speed_rows, "repeats": args.speed_repeats, "diffusion_default_steps": default, **rates}


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


def gap_closed(quality: float, tvae: float, ceiling: float) -> float | None:
    """The share of the TVAE-to-ceiling quality gap a system closes (1: at the ceiling, 0: no better than TVAE);
    None where TVAE is already at or above the ceiling."""
    return (quality - tvae) / (ceiling - tvae) if ceiling > tvae else None


def add_gap_shares(systems: dict[str, dict[str, Any]]) -> None:
    tvae, top = systems["TVAE"]["quality"]["score"], systems["real-train ceiling"]["quality"]["score"]
    for entry in systems.values():
        entry["quality_gap_closed"] = gap_closed(entry["quality"]["score"], tvae, top)


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


def prior_targets(systems: dict[str, dict[str, Any]], auto_key: str, speed: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's targets on one table, each {"met": bool, "detail": str}."""
    auto, share = systems[auto_key], systems[auto_key]["quality_gap_closed"]
    closed_form = {k: e for k, e in systems.items() if k.startswith("ours") and not _learned(k) and k != auto_key}
    best = min(closed_form, key=lambda k: closed_form[k]["detection_auc"])
    steps = speed["diffusion_default_steps"]
    flow, diffusion = speed["flow"]["vs_gaussian"], speed[f"diffusion@steps={steps}"]["vs_gaussian"]
    return {
        f"auto closes >= {GAP_TARGET:.0%} of the TVAE-to-ceiling quality gap": {
            "met": share is not None and share >= GAP_TARGET,
            "detail": f"{_pct(share)} (quality {auto['quality']['score']:.3f})",
        },
        "auto's detection AUC <= the best closed-form sampler's": {
            "met": auto["detection_auc"] <= closed_form[best]["detection_auc"],
            "detail": f"{auto['detection_auc']:.3f} vs {best} {closed_form[best]['detection_auc']:.3f}"
            + (" (auto's own sampler)" if best == f"ours/{auto_key[10:-1]}" else ""),
        },
        "flow >= 1/3 of gaussian's rows/s": {"met": flow >= SPEED_TARGET, "detail": f"{flow:.2f}x"},
        f"diffusion ({steps} steps, its default) >= 1/3 of gaussian's rows/s": {
            "met": diffusion >= SPEED_TARGET,
            "detail": f"{diffusion:.2f}x",
        },
    }


def _learned(system: str) -> bool:
    """ours/flow@T=0.8 -> True: a learned prior's row (ours-prior is N(0, I), closed-form)."""
    return system.startswith("ours/") and system[5:].split("@")[0] in LEARNED


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


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
    speed = generation_speed(ours, args)
    # TVAE models the scored columns: constant columns (digits' always-blank pixels) are never scored and have no
    # kind to give SDV.
    tvae_rows, tvae_seconds = run_tvae(real.modelled[list(kinds)], kinds, args, rows)
    ours_samplers = {
        f"ours-auto[{choice}]": auto,
        "ours-prior": sampler_config(name="prior"),
        **sampler_variants(ours.report, args.diffusion_steps, speed["diffusion_default_steps"]),
    }
    systems: dict[str, dict[str, Any]] = {}
    scored: dict[str, dict[str, Any]] = {}  # sampler JSON -> scores: auto's twin among the candidates is not rescored
    with threadpool_limits(limits=1):  # small samples: one thread per classifier is fastest on 2 cores
        for system, sampler in ours_samplers.items():
            key = sampler.model_dump_json()
            if key not in scored:
                synthetic = generate_ours(ours, sampler, rows, args.seed)
                scored[key] = score(synthetic, real, kinds, label, args.seed)
                save_sample(synthetic, args.out / name / "samples", system)
            systems[system] = {**scored[key], "train_seconds": ours.seconds}
        systems["TVAE"] = {**score(tvae_rows, real, kinds, label, args.seed), "train_seconds": tvae_seconds}
        save_sample(tvae_rows, args.out / name / "samples", "TVAE")
        systems["real-train ceiling"] = {**ceiling(real, kinds, label, args.seed), "train_seconds": None}
    systems = {k: systems[k] for k in [*list(ours_samplers)[:2], "TVAE", "real-train ceiling", *ours_samplers]}
    add_gap_shares(systems)
    likelihood = {e["name"]: e.get("latent_log_likelihood") for e in ours.report["samplers"]}
    for system, entry in systems.items():
        entry["latent_log_likelihood"] = _system_likelihood(system, choice, likelihood)
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
        "seconds": {
            "vae_training": ours.seconds,
            "statistics": ours.statistics_seconds,
            "priors": {n: p["seconds"] for n, p in ours.report["latent"].get("priors", {}).items()},
            "tvae_fit": tvae_seconds,
        },
        "latent_log_likelihood": likelihood,
        "generation_speed": speed,
        "learned_prior_targets": prior_targets(systems, f"ours-auto[{choice}]", speed),
    }


def _system_likelihood(system: str, choice: str, likelihood: dict[str, float | None]) -> float | None:
    """A row's held-out latent log-likelihood from the evaluation report (its candidate's; None where undefined)."""
    if system.startswith("ours-auto["):
        return likelihood.get(choice)
    if system == "ours-prior":
        return likelihood.get("prior")
    return likelihood.get(system.removeprefix("ours/")) if system.startswith("ours/") else None


# ----------------------------------------------------------------------------------------------- output


def save_sample(frame: pd.DataFrame, directory: Path, system: str) -> None:
    """The scored rows, for a look at what a score hides (ours-auto[gmm] -> ours-auto.parquet)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = system.split("[")[0].replace(" ", "-").replace("/", "-")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), directory / f"{stem}.parquet")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def print_table(name: str, result: dict[str, Any]) -> None:
    header = (
        f"{'system':<34} {'quality':>8} {'gap':>5} {'det.AUC':>8} {'util.F1':>8} {'DCR ratio':>10} {'copies':>7} "
        f"{'train s':>8} {'latent LL':>10}"
    )
    print(
        f"\n{name}  (holdout {result['rows']['holdout']} rows, {result['rows']['synthetic']} synthetic rows, "
        f"{result['epochs']} epochs, batch {result['batch_size']}; gap: share of the TVAE-to-ceiling quality gap "
        "closed; latent LL: held-out latent log-likelihood, nats/row)"
    )
    print(header)
    print("-" * len(header))
    for row, (system, entry) in enumerate(result["systems"].items()):
        if row == 4:  # after the four headline rows: every other sampler of the same model
            print("  every other sampler of the same model, in the evaluation's ranking order:")
        privacy = entry["privacy"]
        print(
            f"{system:<34} {_fmt(entry['quality']['score']):>8} {_pct(entry.get('quality_gap_closed')):>5} "
            f"{_fmt(entry['detection_auc']):>8} {_fmt(entry['utility']['macro_f1']):>8} "
            f"{_fmt(privacy['dcr_ratio'], 2):>10} {privacy['exact_copy_share']:>7.1%} "
            f"{_fmt(entry['train_seconds'], 1):>8} {_fmt(entry.get('latent_log_likelihood'), 2):>10}"
        )
    latent, epoch = result["latent"], result["ours_epoch_seconds"]
    print(
        f"ours: {epoch['mean']:.3f} s/epoch in training ({epoch['sum']:.1f} s of epochs), "
        f"TVAE {result['tvae_epoch_seconds_mean']:.3f} s/epoch; active units {latent['active_units']}/"
        f"{latent['latent_dim']}, KL(q(z)||p(z)) {_fmt(latent['kl_to_prior_estimate'], 2)}, "
        f"hole share {_fmt(latent['hole_fraction'], 2)}"
    )
    print_priors(result)
    met = [k for k, ok in result["targets"].items() if ok]
    missed = [k for k, ok in result["targets"].items() if not ok]
    print(f"targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}")


def print_priors(result: dict[str, Any]) -> None:
    """The learned priors' training seconds beside the VAE's, and generation rows/s against gaussian's."""
    seconds = result.get("seconds")
    if seconds is None:  # a results.json entry from before issue 14
        return
    priors = ", ".join(f"{n} {s:.1f} s" for n, s in seconds["priors"].items()) or "none"
    print(
        f"training seconds: VAE {seconds['vae_training']:.1f} (run_training wall); priors {priors} (statistics "
        f"step {seconds['statistics']:.1f} s wall, priors included); TVAE fit {seconds['tvae_fit']:.1f}"
    )
    speed = result["generation_speed"]
    default = f"diffusion@steps={speed['diffusion_default_steps']}"
    rates = [
        f"{n.replace('diffusion@steps=', 'diffusion ')}{'*' if n == default else ''} "
        f"{e['rows_per_s'] / 1e3:,.0f}k ({e['vs_gaussian']:.2f}x)"
        for n, e in speed.items()
        if isinstance(e, dict)
    ]
    print(
        f"generation rows/s (ShardGenerator, one thread, {speed['rows']:,} rows, median of {speed['repeats']}, "
        f"CPU s; x gaussian; * the default steps): {', '.join(rates)}"
    )


def print_prior_targets(results: dict[str, dict[str, Any]]) -> None:
    """Issue 14's targets for every table, one line each."""
    lines = [
        f"  {'met   ' if target['met'] else 'MISSED'}  {name:<14} {label}: {target['detail']}"
        for name, result in results.items()
        for label, target in result.get("learned_prior_targets", {}).items()
    ]
    if lines:
        print("\ntargets (learned priors):", *lines, sep="\n")


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
    parser.add_argument(
        "--diffusion-steps", default="10,20,30", help="DPM-Solver++ step counts timed and scored (and Heun's 50)"
    )
    parser.add_argument("--speed-rows", type=int, default=10_000, help="rows per timed generation shard")
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed shards per sampler (median)")
    parser.add_argument("--out", type=Path, default=Path("out/bench/quality"))
    args = parser.parse_args(argv)
    args.diffusion_steps = [int(s) for s in args.diffusion_steps.split(",")]
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
    print_prior_targets(results)
    print(f"\nresults: {args.out / 'results.json'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
