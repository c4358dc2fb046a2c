"""The `vae-pipeline` command: the flow (`run`) and each step on its own (`train`, `stats`, `generate`, `inspect`).

The CLI owns the console (`vae_pipeline/console.py`): step lines, progress bars and summaries go to stdout, Ray's
and Prefect's own output to a log file (or to stderr with --verbose), and errors to stderr as one last line, each
error kind with its own non-zero exit code.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
from typing import Annotated, Any

import click
import typer
from rich.table import Table

from vae_pipeline import storage
from vae_pipeline.config import PipelineConfig, load_config
from vae_pipeline.console import (
    column_roles,
    console,
    errors,
    print_dataset_summary,
    quiet_log,
    report_paths,
    roles_table,
    scores_table,
    session,
)
from vae_pipeline.errors import StorageError, VaePipelineError
from vae_pipeline.logs import configure_logging, log_context
from vae_pipeline.progress import NO_PROGRESS, Progress
from vae_pipeline.rerun import reused_run

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config (any URL)")]
InputOpt = Annotated[str | None, typer.Option("--input", "-i", help="training table: Parquet/CSV file, dir or glob")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model bundle URL")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="synthetic dataset URL")]
RowsOpt = Annotated[int | None, typer.Option("--rows", "-n", help="rows to generate")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="training epochs")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="seed for training, statistics and generation")]
SamplerOpt = Annotated[
    str | None, typer.Option("--sampler", help="auto|prior|gaussian|gmm|empirical|conditional|flow|diffusion")
]
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
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        envvar="VAE_PIPELINE_VERBOSE",  # for deployments whose platform keeps stderr (a RayJob's pod, a CI log)
        help="stream Ray's and Prefect's logs to stderr instead of a log file",
    ),
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
        "augment.target": flags.get("target"),
        "augment.synthetic_only": True if flags.get("synthetic_only") else None,
        "augment.provenance_column": flags.get("provenance_column"),
        "augment.enabled": True if flags.get("augment") else None,
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
    verbose: VerboseOpt = False,
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
    _run_flow(pipeline, "run", verbose)


TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="balance (default), ratio:R (up to R x the majority), or CLASS=N,CLASS=N (totals)"),
]
SyntheticOnlyOpt = Annotated[bool, typer.Option("--synthetic-only", help="write only the synthetic rows")]
ProvenanceOpt = Annotated[
    str | None, typer.Option("--provenance-column", help="boolean column marking synthetic rows (default: synthetic)")
]


@app.command()
def augment(
    config: ConfigOpt = None,
    input: InputOpt = None,
    label: LabelOpt = None,
    output: OutputOpt = None,
    target: TargetOpt = None,
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    sampler: SamplerOpt = None,
    synthetic_only: SyntheticOnlyOpt = False,
    provenance_column: ProvenanceOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    no_privacy_guard: GuardOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Top up each class of --label to --target: the real rows plus exactly the synthetic rows each class needs.

    The flow of `run` (train -> stats -> evaluate -> generate); each class's rows are drawn from its own latents
    (the conditional sampler, or any sampler under a CVAE), and a provenance column marks them.
    """
    pipeline = build_config(
        config,
        input=input,
        label=label,
        output=output,
        target=target,
        model=model,
        epochs=epochs,
        seed=seed,
        sampler=sampler,
        synthetic_only=synthetic_only,
        provenance_column=provenance_column,
        workers=workers,
        overwrite=overwrite,
        resume=resume,
        no_privacy_guard=no_privacy_guard,
        augment=True,
    )
    _run_flow(pipeline, "augment", verbose)


def _run_flow(pipeline: PipelineConfig, command: str, verbose: bool) -> None:
    """Preflight, then the flow under Prefect (or the reuse of every step), then the dataset's summary."""
    preflight(pipeline)
    started = time.perf_counter()
    with session(pipeline.model_url, command, verbose=verbose) as current:
        reused = reused_run(pipeline)
        if reused is not None:  # nothing to do: said without starting Prefect's server or Ray
            for step, summary in reused:
                current.progress.start(step)
                current.progress.finish(summary)
        else:
            from flows.augment import run_augment  # Prefect is imported only when the flow runs, its output diverted

            run_augment(pipeline.to_json(), current.progress)
    print_dataset_summary(console, pipeline.generation.output_url, time.perf_counter() - started)


@app.command()
def train(
    config: ConfigOpt = None,
    input: InputOpt = None,
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    label: LabelOpt = None,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train a model bundle on Ray."""
    from vae_pipeline.bundle import load_bundle
    from vae_pipeline.training.job import run_training

    pipeline = build_config(config, input=input, model=model, epochs=epochs, seed=seed, label=label, workers=workers)
    preflight(pipeline, check_output=False)
    with session(pipeline.model_url, "train", verbose=verbose) as current:
        url = run_training(pipeline, current.progress)
    console.print(f"model bundle: [bold]{storage.redact_url(url)}[/bold]", soft_wrap=True)
    try:
        console.print(roles_table(column_roles(load_bundle(url).transform)))
    except StorageError:  # trained through ray:// into storage this machine cannot read: the step still succeeded
        console.print("(the bundle is not readable from here to list its columns; `vae-pipeline inspect` it there)")


@app.command()
def stats(
    model: ModelOpt = None,
    config: ConfigOpt = None,
    statistics: StatsOpt = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compute the aggregate-posterior statistics of a model bundle."""
    from vae_pipeline.posterior.job import run_statistics

    pipeline = build_config(config, model=model, seed=seed, workers=workers)
    with session(pipeline.model_url, "stats", verbose=verbose) as current:
        url = run_statistics(pipeline, pipeline.model_url, statistics, current.progress)
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
    verbose: VerboseOpt = False,
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
    with session(model_url, "generate", verbose=verbose) as current:
        if pipeline.sampler.name == "auto" and read_report(model_url) is None:
            console.print("sampler 'auto': evaluating every sampler on this model first")
            _evaluate(pipeline, model_url, statistics, progress=current.progress)
        run_generation(pipeline, model_url=model_url, statistics_url=statistics, progress=current.progress)
    print_dataset_summary(console, pipeline.generation.output_url, time.perf_counter() - started)


@app.command()
def evaluate(
    model: ModelOpt = None,
    config: ConfigOpt = None,
    input: Annotated[str | None, typer.Option("--input", "-i", help="score against this table's holdout")] = None,
    rows: Annotated[int | None, typer.Option("--rows", "-n", help="synthetic rows per sampler")] = None,
    seed: SeedOpt = None,
    statistics: StatsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score every sampler on held-out real rows; writes report.json, report.md and plots beside the bundle."""
    from vae_pipeline.bundle import load_bundle

    base = load_config(config) if config else load_bundle(model or PipelineConfig().model_url).config
    pipeline = base.with_overrides({"model_url": model, "evaluation.rows": rows, "evaluation.seed": seed})
    with session(pipeline.model_url, "evaluate", verbose=verbose) as current:
        _evaluate(pipeline, pipeline.model_url, statistics, input, progress=current.progress)
    for line in report_paths(pipeline.model_url):
        console.print(line, soft_wrap=True, highlight=False)


def _evaluate(
    pipeline: PipelineConfig,
    model_url: str,
    statistics: str | None,
    input_url: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> str:
    """Run the evaluation, then its verdict and the chosen sampler's scores beside the prior's."""
    from vae_pipeline.evaluation.job import run_evaluation
    from vae_pipeline.evaluation.report import verdict

    report_url = run_evaluation(pipeline, model_url, statistics, input_url, progress)
    report = storage.read_json(report_url)
    console.print(verdict(report))
    choice = report.get("choice")
    chosen = next((e for e in report["samplers"] if choice and e["name"] == choice["name"]), None)
    console.print(scores_table(report, chosen))
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
        roles = section.pop("roles", None)  # every column's role and why: a table of its own
        order = list(section.pop("columns", None) or []) if roles is not None else []  # schema order
        _print_mapping(title, section)
        if roles is not None:
            names = [name for name in order if name in roles] + [name for name in roles if name not in order]
            console.print(roles_table({name: (roles[name]["role"], roles[name]["reason"]) for name in names}))


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
    """Catch bad input before any Ray or Prefect start-up: the data opens, a `local` executor can be one, and the
    output is free."""
    from vae_pipeline.data import open_source
    from vae_pipeline.executor import check_local_settings
    from vae_pipeline.generation.output import check_output_free

    source = open_source(pipeline.data)
    check_local_settings(pipeline)
    if pipeline.augment.enabled and pipeline.data.label_column:
        from vae_pipeline.generation.augment import check_augment, small_classes

        real, _, added = check_augment(pipeline.augment, source, pipeline.data.label_column)
        for warning in small_classes(real, added):
            errors.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if check_output:
        settings = pipeline.generation
        check_output_free(settings.output_url, settings.overwrite, settings.resume, pipeline.to_json())


def _print_mapping(title: str, mapping: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in mapping.items():
        table.add_row(str(key), value if isinstance(value, str) else json.dumps(value, default=str))
    console.print(table)


def main() -> None:
    # VAE_PIPELINE_LOG_FORMAT=json gives one JSON object per log line, with the run id and step, for log pipelines.
    configure_logging(os.environ.get("VAE_PIPELINE_LOG_FORMAT", "text"))
    # Exit handlers run last registered, first run: this one, registered before Ray and Prefect register theirs
    # (which log as the temporary server and Ray shut down), runs after them, so the error is the last line.
    atexit.register(_print_error)
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "-")
    try:
        with log_context(step=command):
            app(standalone_mode=False)
    except VaePipelineError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("aborted", 130)
    except click.exceptions.ClickException as exc:
        exc.show(file=errors.file)
        sys.exit(exc.exit_code)
    except Exception as exc:
        log = quiet_log()
        if log is None:
            raise  # --verbose, or before any output was diverted: Python's own traceback on stderr
        # The root logger writes to the log file alone (the pipeline's own loggers also reach the console).
        logging.getLogger().exception("vae-pipeline %s failed", command)
        _fail(f"error: {type(exc).__name__}: {_last_line(exc)} (traceback in {log})", 1)


def _last_line(exc: BaseException, limit: int = 300) -> str:
    """An unexpected error's message on one line: the last line of a long one (a Ray error ends with its cause's)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[-1] if lines else "no message"
    return line if len(line) <= limit else line[: limit - 3] + "..."


_ERROR: list[str] = []  # the one-line error, printed at exit


def _fail(line: str, exit_code: int) -> None:
    """Exit with the one-line error as the last line on stderr."""
    _ERROR.append(line)
    sys.exit(exit_code)


def _print_error() -> None:
    for line in _ERROR:
        errors.print(line, markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
