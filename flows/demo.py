"""`make demo`: the augmentation flow on the shipped penguins table, then a short real-vs-synthetic summary.

Local Ray, Prefect's ephemeral API, local storage under ./out/demo.
"""

from __future__ import annotations

import logging
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
from rich.console import Console
from rich.table import Table

from flows.augment import augment
from vae_pipeline.config import load_config
from vae_pipeline.errors import VaePipelineError
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.runtime import shutdown_ray

CONFIG_URL = "configs/demo.yaml"
console = Console()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(CONFIG_URL)
    started = time.perf_counter()
    try:
        manifest_url = augment(config=config.to_json())
    except VaePipelineError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return exc.exit_code
    finally:
        shutdown_ray()
    wall = time.perf_counter() - started
    output_url = config.generation.output_url
    manifest = read_manifest(output_url)
    assert manifest is not None
    console.print(
        f"\n[bold green]done in {wall:.1f}s[/bold green]: {manifest.rows:,} synthetic rows in "
        f"{len(manifest.shards)} Parquet shards ({manifest.bytes / 1e6:.2f} MB) at [bold]{output_url}[/bold]"
    )
    console.print(f"manifest: {manifest_url}   model: {config.model_url}   sampler: {manifest.sampler['name']}")
    real = pa_ds.dataset(config.data.input_url).to_table()
    synthetic = pa_ds.dataset([f"{output_url}/{s.name}" for s in manifest.shards]).to_table()
    console.print(compare_columns(real, synthetic))
    return 0


def compare_columns(real: pa.Table, synthetic: pa.Table) -> Table:
    """Per column: mean (numeric) or most common value share (categorical), and null share, real vs synthetic."""
    table = Table(title="real vs synthetic", title_justify="left")
    for header in ("column", "type", "real", "synthetic", "real nulls", "synthetic nulls"):
        table.add_column(header)
    for name in real.column_names:
        column_real, column_synth = real.column(name), synthetic.column(name)
        table.add_row(
            name,
            str(column_synth.type),
            _describe(column_real),
            _describe(column_synth),
            f"{column_real.null_count / len(column_real):.1%}",
            f"{column_synth.null_count / len(column_synth):.1%}",
        )
    return table


def _describe(column: pa.ChunkedArray) -> str:
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return f"mean {pc.mean(column).as_py():.2f}  sd {pc.stddev(column).as_py():.2f}"
    counts = pc.value_counts(column.drop_null()).to_pylist()
    total = sum(c["counts"] for c in counts)
    top = sorted(counts, key=lambda c: -c["counts"])[:3]
    return ", ".join(f"{c['values']} {c['counts'] / total:.0%}" for c in top)


if __name__ == "__main__":
    sys.exit(main())
