"""What the user sees: a line as each step starts and ends, a progress bar between them, and a closing summary.

The CLI and `make demo` own the console; library steps only report through `vae_pipeline.progress`. By default the
console is quiet: Ray's and Prefect's own output goes to a log file (`logs.divert_output`), whose path is printed
once, and only the steps, the bars, warnings from the pipeline itself and the summary reach the terminal.
`verbose` leaves every log on stderr as it comes, and draws no bars between those lines.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars
from rich.table import Table

from vae_pipeline import storage
from vae_pipeline.logs import Diverted, divert_output, log_file_for

console = Console()  # stdout: steps, bars, warnings, summaries
errors = Console(stderr=True)  # stderr: the one-line error, last
_diverted: Diverted | None = None  # one log file per process, however many commands it runs


class ConsoleProgress:
    """`Progress` on a rich console: one line when a step starts, one when it ends, a transient bar between."""

    def __init__(self, out: Console, *, bars: bool = True) -> None:
        self.out = out
        self._lock = threading.RLock()  # training reports arrive on their own thread
        self._bars = _bars(out) if bars and out.is_terminal else None
        self._task: TaskID | None = None
        self._step: str | None = None
        self._started = 0.0

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            if step == self._step:  # the running step learned its size
                if self._bars is not None and self._task is not None:
                    self._bars.update(self._task, total=total, unit=unit)
                return
            self._end("[yellow]stopped[/yellow]")
            self._step, self._started = step, time.perf_counter()
            self.out.print(f"[bold cyan]{escape(step)}[/bold cyan] started")
            if self._bars is not None:
                self._bars.start()
                self._task = self._bars.add_task(step, total=total, unit=unit, detail="")

    def advance(self, n: int = 1, detail: str = "") -> None:
        with self._lock:
            if self._bars is not None and self._task is not None:
                self._bars.update(self._task, advance=n, detail=detail)

    def finish(self, summary: str) -> None:
        with self._lock:
            self._end("[green]done[/green]", summary)

    def close(self, failed: bool = False) -> None:
        """End the session: a step still open failed (or was stopped), and the bars go."""
        with self._lock:
            self._end("[red]failed[/red]" if failed else "[yellow]stopped[/yellow]")

    def _end(self, outcome: str, summary: str = "") -> None:
        if self._bars is not None:
            if self._task is not None:
                self._bars.remove_task(self._task)
            self._bars.stop()
        if self._step is not None:
            seconds = time.perf_counter() - self._started
            tail = f": {escape(summary)}" if summary else ""
            self.out.print(f"[bold cyan]{escape(self._step)}[/bold cyan] {outcome} in {seconds:.1f}s{tail}")
        self._task, self._step = None, None


def _bars(out: Console) -> Bars:
    # No redirection: while the bars are live, writes to sys.stdout and sys.stderr (Ray's streamed worker lines,
    # Prefect's handlers) must keep going where the file descriptors point, not onto the terminal above the bars.
    return Bars(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[detail]}"),
        console=out,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )


class WarningsToConsole(logging.Handler):
    """The pipeline's own warnings (a column nulled, a run to resume) as `warning: ...` lines among the steps."""

    def __init__(self, out: Console) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            self.out.print(f"[yellow]{level}:[/yellow] {escape(record.getMessage())}", soft_wrap=True)
        except Exception:  # a log call must never fail the step
            self.handleError(record)


@dataclass
class Session:
    """One command's console: its progress, and the log file when quiet."""

    progress: ConsoleProgress
    log_path: Path | None


@contextmanager
def session(model_url: str, command: str, *, verbose: bool = False) -> Iterator[Session]:
    """Quiet (default): Ray's and Prefect's output to a log file beside the model, its path printed once, the
    pipeline's warnings on the console. Verbose: logs on stderr as they come, step lines without bars.

    The file descriptors stay diverted after the block: Ray and Prefect shut down at the process's exit and still
    write then. A step left open by an exception is reported as failed.
    """
    if not verbose:
        _go_quiet(model_url, command)
    progress = ConsoleProgress(console, bars=not verbose)
    try:
        yield Session(progress, quiet_log())
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()


def quiet_log() -> Path | None:
    """The log file this process's output goes to, or None while it goes to the terminal."""
    return None if _diverted is None else _diverted.path


def _go_quiet(model_url: str, command: str) -> None:
    global _diverted
    if _diverted is not None:
        return  # a later command of the same process (the Ray Client test's train -> stats -> generate) logs on
    _diverted = divert_output(log_file_for(model_url, command))
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # plain text in the file: no colour codes around Ray's prefixes
    console.file, errors.file = _diverted.stdout, _diverted.stderr
    logging.getLogger("vae_pipeline").addHandler(WarningsToConsole(console))
    console.print(f"[dim]logs: {escape(str(_diverted.path))}[/dim]", highlight=False, soft_wrap=True)


# --- summaries ---------------------------------------------------------------------------------------------------


def column_roles(transform: Any) -> dict[str, tuple[str, str]]:
    """Each column's role and the reason it was given (`TableTransform.column_roles()`), in the table's order."""
    roles = {name: (str(role), str(why)) for name, (role, why) in transform.column_roles().items()}
    order = [name for name in transform.schema.names if name in roles]
    return {name: roles[name] for name in [*order, *(name for name in roles if name not in order)]}


def roles_table(roles: dict[str, tuple[str, str]]) -> Table:
    """Every column's role and why, as `column_roles` gives them."""
    table = Table(title="columns", title_justify="left")
    for header in ("column", "role", "why"):
        table.add_column(header)
    for name, (role, why) in roles.items():
        table.add_row(escape(name), escape(role), escape(why))
    return table


def scores_table(report: dict[str, Any], used: dict[str, Any] | None) -> Table:
    """The sampler used beside the prior and the real-rows ceiling: its scores (tabular or image), DCR, copies."""
    table = Table(title="evaluation (held-out real rows)", title_justify="left")
    images = "image" in report["reference"] and report["reference"]["image"] is not None
    scores = _IMAGE_SCORES if images else _TABLE_SCORES
    for header in (*(name for name, _ in scores), "DCR ratio", "exact copies", "privacy guard"):
        table.add_column(header)
    prior = next((e for e in report["samplers"] if e["name"] == "prior"), None)
    rows = [(f"{used['name']} (used)", used)] if used is not None else []
    if prior is not None and (used is None or used["name"] != "prior"):
        rows.append(("prior", prior))
    rows.append(("real training rows", report["reference"]))
    for name, entry in rows:
        privacy = entry["privacy"]
        ok = entry.get("privacy_ok")
        guard = "-" if ok is None else "passes" if ok else escape(f"refused: {entry.get('privacy_reason') or ''}")
        cells = [escape(name), *(read(entry) for _, read in scores[1:])]
        table.add_row(*cells, f"{privacy['dcr_ratio']:.2f}", f"{privacy['exact_copy_share']:.1%}", guard)
    table.caption = _IMAGE_CAPTION if images else _TABLE_CAPTION
    table.caption_justify = "left"
    return table


def _score(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


_TABLE_SCORES: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("sampler", lambda e: ""),
    ("quality", lambda e: _score(e["quality"]["score"])),
    ("detection AUC", lambda e: _score(e["detection_auc"])),
]
_IMAGE_SCORES: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("sampler", lambda e: ""),
    ("Fréchet distance", lambda e: _score(e["image"]["frechet_distance"], ".2f")),
    ("precision", lambda e: _score(e["image"]["precision"])),
    ("recall", lambda e: _score(e["image"]["recall"])),
    ("TSTR accuracy", lambda e: _score(e["image"].get("tstr_accuracy"))),
]
_TABLE_CAPTION = (
    "quality: 1 is a perfect match; detection AUC: 0.5 means a classifier cannot tell the rows from real ones; "
    "DCR ratio: 1 or more means no closer to training rows than real rows are"
)
_IMAGE_CAPTION = (
    "Fréchet distance in a domain classifier's features (lower is better; real training images give the floor); "
    "precision/recall: share of images that look real / of real images covered; TSTR: a classifier trained on "
    "the images, tested on real ones; DCR ratio: 1 or more means no closer to training images than real ones are"
)


def report_paths(model_url: str) -> list[str]:
    """The evaluation's report.md and its plots, as lines."""
    from vae_pipeline.evaluation.store import MARKDOWN_FILE, default_evaluation_url

    found = default_evaluation_url(model_url)
    evaluation_url = storage.redact_url(found)
    names = [*_PLOTS, "images"] if storage.exists(storage.join_url(found, "plots", "images.png")) else _PLOTS
    plots = ", ".join(storage.join_url(evaluation_url, "plots", f"{name}.png") for name in names)
    return [
        f"evaluation report: [bold]{storage.join_url(evaluation_url, MARKDOWN_FILE)}[/bold]",
        f"plots: {plots}",
    ]


_PLOTS = ["marginals", "latent", "scores"]


def print_dataset_summary(out: Console, output_url: str, seconds: float, *, roles: bool = True) -> None:
    """The end of `run` and `generate`: the dataset, the sampler and its scores beside the prior's, where the
    report and its plots are, and each column's role and why."""
    from vae_pipeline.bundle import load_bundle
    from vae_pipeline.evaluation.store import read_report
    from vae_pipeline.generation.manifest import manifest_url, read_manifest

    manifest = read_manifest(output_url)
    if manifest is None:
        raise AssertionError(f"no committed manifest at {output_url} after generation")
    shown = storage.redact_url(output_url)
    out.print(f"finished in {seconds:.1f}s ({manifest.rows / max(seconds, 1e-9):,.0f} rows/s end to end)")
    out.print(
        f"synthetic dataset: [bold]{shown}[/bold] ({manifest.rows:,} rows in {len(manifest.shards)} shards, "
        f"manifest {storage.redact_url(manifest_url(output_url))})",
        soft_wrap=True,
    )
    evaluation = manifest.extra.get("evaluation") or {}
    used = evaluation.get("scores")
    requested = manifest.extra.get("sampler_requested")
    report = read_report(manifest.model_url)
    out.print(_sampler_line(manifest.sampler, used, requested, report), soft_wrap=True, highlight=False)
    if report is not None:
        out.print(scores_table(report, used))
        for line in report_paths(manifest.model_url):
            out.print(line, soft_wrap=True, highlight=False)
    if "augment" in manifest.extra:
        out.print(augment_table(manifest.extra["augment"]))
    if roles:
        out.print(roles_table(column_roles(load_bundle(manifest.model_url).transform)))


def augment_table(augment: dict[str, Any]) -> Table:
    """An augmented dataset's rows per class: real, synthetic (exact quotas) and the total each class reached."""
    table = Table(title=f"augmented to {augment['target']} (provenance column: {augment['provenance_column']})")
    table.title_justify = "left"
    for header in ("class", "real rows", "synthetic rows", "total"):
        table.add_column(header, justify="left" if header == "class" else "right")
    for name, counts in augment["classes"].items():
        real, synthetic = counts["real"], counts["synthetic"]
        table.add_row(escape(name), f"{real:,}", f"{synthetic:,}", f"{real + synthetic:,}")
    if augment["synthetic_only"]:
        table.caption = "--synthetic-only: the dataset holds the synthetic rows alone"
    return table


def _sampler_line(
    sampler: dict[str, Any], used: dict[str, Any] | None, requested: str | None, report: dict[str, Any] | None
) -> str:
    """The sampler by its evaluation name (`gmm@T=0.8`, `gaussian-diagonal`) where it was evaluated."""
    if used is not None:
        shown = escape(used["name"])
    else:
        name, temperature = sampler.get("name", "?"), sampler.get("temperature", 1.0)
        shown = escape(name if temperature == 1.0 else f"{name} at temperature {temperature:g}")
    choice = (report or {}).get("choice")
    if requested == "auto" and choice:
        return f"sampler: [bold]{shown}[/bold], the evaluation's choice: {escape(choice['reason'])}"
    return f"sampler: [bold]{shown}[/bold] (asked for by name)"
