"""The `vae-pipeline` command: the flow (`run`) and each step on its own (`train`, `stats`, `generate`, `inspect`).

The CLI owns the console: progress bars and summaries go to stdout, errors to stderr as one line, and each
error kind has its own non-zero exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vae_pipeline import storage
from vae_pipeline.config import PipelineConfig, load_config
from vae_pipeline.errors import StorageError, VaePipelineError
from vae_pipeline.logs import configure_logging, log_context

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
errors = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config (any URL)")]
InputOpt = Annotated[str | None, typer.Option("--input", "-i", help="training table: Parquet/CSV file, dir or glob")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model bundle URL")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="synthetic dataset URL")]
RowsOpt = Annotated[int | None, typer.Option("--rows", "-n", help="rows to generate")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="training epochs")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="seed for training, statistics and generation")]
SamplerOpt = Annotated[str | None, typer.Option("--sampler", help="prior|gaussian|gmm|empirical|conditional")]
TemperatureOpt = Annotated[float | None, typer.Option("--temperature", help="latent temperature")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="label column (per-class statistics, CVAE)")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-w", help="Ray workers for every step")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace another run at the output")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="finish an interrupted run of this config: redo only missing or damaged shards")
]
StatsOpt = Annotated[str | None, typer.Option("--statistics", help="statistics URL (default <model>/statistics)")]
GuardOpt = Annotated[
    bool, typer.Option("--no-privacy-guard", help="generate even if rows sit too close to training rows")
]


def build_config(config_url: str | None = None, **flags: Any) -> PipelineConfig:
    """The config file (or defaults) with command-line flags applied on top, validated as a whole."""
    return apply_flags(load_config(config_url) if config_url else PipelineConfig(), **flags)


def apply_flags(base: PipelineConfig, **flags: Any) -> PipelineConfig:
    seed, workers = flags.pop("seed", None), flags.pop("workers", None)
    overrides = {
        "data.input_url": flags.get("input"),
        "data.label_column": flags.get("label"),
        "model_url": flags.get("model"),
        "generation.output_url": flags.get("output"),
        "generation.rows": flags.get("rows"),
        "generation.overwrite": True if flags.get("overwrite") else None,
        "generation.resume": True if flags.get("resume") else None,
        "generation.privacy_guard": False if flags.get("no_privacy_guard") else None,
        "training.epochs": flags.get("epochs"),
        "sampler.name": flags.get("sampler"),
        "sampler.temperature": flags.get("temperature"),
    }
    for key in ("training.seed", "statistics.seed", "generation.seed"):
        overrides[key] = seed
    for key in ("training.num_workers", "statistics.num_workers", "generation.num_workers"):
        overrides[key] = workers
    return base.with_overrides(overrides)


@app.command()
def run(
    config: ConfigOpt = None,
    input: InputOpt = None,
    output: OutputOpt = None,
    rows: RowsOpt = None,
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    sampler: SamplerOpt = None,
    temperature: TemperatureOpt = None,
    label: LabelOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    no_privacy_guard: GuardOpt = False,
) -> None:
    """Run the whole flow (train -> stats -> evaluate -> generate) under Prefect."""
    pipeline = build_config(
        config,
        input=input,
        output=output,
        rows=rows,
        model=model,
        epochs=epochs,
        seed=seed,
        sampler=sampler,
        temperature=temperature,
        label=label,
        workers=workers,
        overwrite=overwrite,
        resume=resume,
        no_privacy_guard=no_privacy_guard,
    )
    preflight(pipeline)
    from flows.augment import augment  # Prefect is imported only when the flow runs

    started = time.perf_counter()
    manifest = augment(config=pipeline.to_json())
    print_manifest(manifest, time.perf_counter() - started)


@app.command()
def train(
    config: ConfigOpt = None,
    input: InputOpt = None,
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    label: LabelOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Train a model bundle on Ray."""
    from vae_pipeline.training.ray_train import run_training

    pipeline = build_config(config, input=input, model=model, epochs=epochs, seed=seed, label=label, workers=workers)
    preflight(pipeline, check_output=False)
    url = run_training(pipeline)
    console.print(f"model bundle: [bold]{url}[/bold]")


@app.command()
def stats(
    model: ModelOpt = None,
    config: ConfigOpt = None,
    statistics: StatsOpt = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Compute the aggregate-posterior statistics of a model bundle."""
    from vae_pipeline.posterior.job import run_statistics

    pipeline = build_config(config, model=model, seed=seed, workers=workers)
    url = run_statistics(pipeline, model_url=pipeline.model_url, statistics_url=statistics)
    console.print(f"statistics: [bold]{url}[/bold]")
    _print_mapping("aggregate posterior", _posterior_summary(url))


@app.command()
def generate(
    model: ModelOpt = None,
    output: OutputOpt = None,
    rows: RowsOpt = None,
    seed: SeedOpt = None,
    sampler: SamplerOpt = None,
    temperature: TemperatureOpt = None,
    statistics: StatsOpt = None,
    config: ConfigOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    no_privacy_guard: GuardOpt = False,
) -> None:
    """Generate synthetic rows from an existing bundle into Parquet shards plus _manifest.json."""
    from vae_pipeline.bundle import load_bundle
    from vae_pipeline.evaluation.store import read_report
    from vae_pipeline.generation.job import run_generation

    # Without --config, start from the config the bundle was trained with.
    base = load_config(config) if config else load_bundle(model or PipelineConfig().model_url).config
    pipeline = apply_flags(
        base,
        model=model,
        output=output,
        rows=rows,
        seed=seed,
        sampler=sampler,
        temperature=temperature,
        workers=workers,
        overwrite=overwrite,
        resume=resume,
        no_privacy_guard=no_privacy_guard,
    )
    model_url = pipeline.model_url
    started = time.perf_counter()
    if pipeline.sampler.name == "auto" and read_report(model_url) is None:
        console.print("sampler 'auto': evaluating every sampler on this model first")
        _evaluate(pipeline, model_url, statistics)
    with _shard_progress(pipeline.generation.rows, pipeline.generation.rows_per_shard) as on_shard:
        url = run_generation(pipeline, model_url=model_url, statistics_url=statistics, on_shard=on_shard)
    print_manifest(url, time.perf_counter() - started)


@app.command()
def evaluate(
    model: ModelOpt = None,
    config: ConfigOpt = None,
    input: Annotated[str | None, typer.Option("--input", "-i", help="score against this table's holdout")] = None,
    rows: Annotated[int | None, typer.Option("--rows", "-n", help="synthetic rows per sampler")] = None,
    seed: SeedOpt = None,
    statistics: StatsOpt = None,
) -> None:
    """Score every sampler on held-out real rows; writes report.json, report.md and plots beside the bundle."""
    from vae_pipeline.bundle import load_bundle

    base = load_config(config) if config else load_bundle(model or PipelineConfig().model_url).config
    pipeline = base.with_overrides({"model_url": model, "evaluation.rows": rows, "evaluation.seed": seed})
    report_url = _evaluate(pipeline, pipeline.model_url, statistics, input)
    console.print(f"evaluation report: [bold]{report_url.rsplit('/', 1)[0]}/report.md[/bold]")


def _evaluate(pipeline: PipelineConfig, model_url: str, statistics: str | None, input_url: str | None = None) -> str:
    from vae_pipeline.evaluation.job import run_evaluation
    from vae_pipeline.evaluation.report import verdict

    report_url = run_evaluation(pipeline, model_url=model_url, statistics_url=statistics, input_url=input_url)
    console.print(verdict(storage.read_json(report_url)))
    return report_url


@app.command()
def serve(
    config: Annotated[str, typer.Argument(help="YAML config URL, read again at every run")],
    cron: Annotated[str, typer.Option("--cron", help="schedule, e.g. '0 2 * * *' for 02:00 daily")],
    timezone: Annotated[str, typer.Option("--timezone", help="the cron's time zone")] = "UTC",
    name: Annotated[str, typer.Option("--name", help="deployment name (flow vae-augment)")] = "augment-serve",
) -> None:
    """Serve the flow on a cron schedule from this process (Prefect `serve`; PREFECT_API_URL picks the server)."""
    from flows.serve import cron_schedule, serve_augment  # Prefect is imported only here

    cron_schedule(cron, timezone)  # a bad schedule fails before anything is registered
    pipeline = load_config(config)
    preflight(pipeline, check_output=False)
    console.print(f"serving vae-augment/{name} on '{cron}' ({timezone}) with {config}; Ctrl-C stops")
    serve_augment(config, cron, timezone, name)


@app.command()
def inspect(
    url: Annotated[str, typer.Argument(help="a bundle, statistics or dataset URL")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="check every shard's checksum (reads them all)")] = False,
) -> None:
    """Summarise a model bundle, its statistics or a synthetic dataset (and which of its shards exist)."""
    summary = describe(url, verify=verify)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    for title, section in summary.items():
        _print_mapping(title, section)


def describe(url: str, verify: bool = False) -> dict[str, Any]:
    """What is stored at `url`, as {section title: summary}."""
    from vae_pipeline.bundle import META_FILE, default_statistics_url, load_bundle
    from vae_pipeline.generation.manifest import read_manifest
    from vae_pipeline.generation.output import output_status, read_claim

    manifest = read_manifest(url)
    if manifest is not None:
        return {
            "synthetic dataset": manifest.summary(),
            "shards": output_status(url, verify=verify),
            "history": run_history(manifest.extra),
        }
    if read_claim(url) is not None:
        return {"unfinished generation run": output_status(url, verify=verify)}
    if storage.exists(storage.join_url(url, "posterior.json")):
        return {"aggregate posterior": _posterior_summary(url)}
    if storage.exists(storage.join_url(url, META_FILE)):
        summary: dict[str, Any] = {"model bundle": load_bundle(url).summary()}
        statistics_url = default_statistics_url(url)
        if storage.exists(storage.join_url(statistics_url, "posterior.json")):
            summary["aggregate posterior"] = _posterior_summary(statistics_url)
        from vae_pipeline import steps
        from vae_pipeline.evaluation.store import default_evaluation_url

        urls = {"train": url, "statistics": statistics_url, "evaluate": default_evaluation_url(url)}
        history = run_history({"history": steps.history(urls)})
        if history:
            summary["history"] = history
        return summary
    raise StorageError(f"nothing to inspect at {storage.redact_url(url)}: no bundle, statistics or manifest there")


def run_history(extra: dict[str, Any]) -> dict[str, str]:
    """Each step that led to a dataset: when it finished, how long it took, its peak memory; then generation."""
    history = {}
    for entry in extra.get("history", []):
        peak = entry.get("peak_rss_bytes", 0) / 2**20
        history[entry["step"]] = f"finished {entry['finished_at']}, {entry['seconds']:.1f}s, peak RSS {peak:,.0f} MiB"
    workers = extra.get("workers", [])
    if "seconds" in extra:
        peaks = ", ".join(f"{w['peak_rss_bytes'] / 2**20:,.0f}" for w in workers)
        history["generate"] = f"{extra['seconds']:.1f}s on {len(workers)} worker(s), peak RSS {peaks} MiB"
    return history


def _posterior_summary(url: str) -> dict[str, Any]:
    from vae_pipeline.posterior.aggregate import load_posterior

    return load_posterior(url).summary()


def preflight(pipeline: PipelineConfig, *, check_output: bool = True) -> None:
    """Catch bad input before any Ray or Prefect start-up: the data opens and the output is free."""
    from vae_pipeline.data import open_source
    from vae_pipeline.generation.output import check_output_free

    open_source(pipeline.data)
    if check_output:
        settings = pipeline.generation
        check_output_free(settings.output_url, settings.overwrite, settings.resume, pipeline.to_json())


def print_manifest(manifest_url: str, seconds: float) -> None:
    from vae_pipeline.generation.manifest import read_manifest

    output_url = manifest_url.rsplit("/", 1)[0]
    manifest = read_manifest(output_url)
    assert manifest is not None
    console.print(f"finished in {seconds:.1f}s ({manifest.rows / seconds:,.0f} rows/s end to end)")
    console.print(
        f"synthetic dataset: [bold]{output_url}[/bold] ({manifest.rows:,} rows in "
        f"{len(manifest.shards)} shards, manifest {manifest_url})"
    )


class _shard_progress:
    """A rich progress bar fed by the generation job's per-shard callback."""

    def __init__(self, rows: int, rows_per_shard: int) -> None:
        self.total = -(-rows // rows_per_shard)
        self.progress = Progress(
            TextColumn("generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def __enter__(self) -> Any:
        self.progress.start()
        task_id = self.progress.add_task("shards", total=self.total)
        return lambda record: self.progress.advance(task_id)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _print_mapping(title: str, mapping: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in mapping.items():
        table.add_row(str(key), value if isinstance(value, str) else json.dumps(value, default=str))
    console.print(table)


def main() -> None:
    # VAE_PIPELINE_LOG_FORMAT=json gives one JSON object per log line, with the run id and step, for log pipelines.
    configure_logging(os.environ.get("VAE_PIPELINE_LOG_FORMAT", "text"))
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "-")
    try:
        with log_context(step=command):
            app(standalone_mode=False)
    except VaePipelineError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        errors.print("aborted")
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
