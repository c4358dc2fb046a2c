"""`make demo` (`make demo-images`): the augmentation flow on the shipped penguins table (Fashion-MNIST slice),
then a short real-vs-synthetic summary (and where the evaluation's image grid is).

Local Ray, Prefect's ephemeral API, local storage under ./out/demo. The console is the CLI's: a line per step, progress
bars, the run's summary; Ray's and Prefect's output goes to a log file under out/demo/logs (`--verbose`: to stderr).
"""

from __future__ import annotations

import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
from rich.table import Table

from vae_pipeline import storage
from vae_pipeline.config import load_config
from vae_pipeline.console import console, errors, print_dataset_summary, session
from vae_pipeline.errors import VaePipelineError
from vae_pipeline.evaluation.store import default_evaluation_url
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.image_columns import image_values, is_image_type
from vae_pipeline.logs import configure_logging
from vae_pipeline.runtime import shutdown_ray

CONFIG_URL = "configs/demo.yaml"
IMAGES_CONFIG_URL = "configs/demo-images.yaml"


def main(verbose: bool = False, config_url: str = CONFIG_URL) -> int:
    configure_logging()
    config = load_config(config_url)
    started = time.perf_counter()
    try:
        with session(config.model_url, "demo", verbose=verbose) as current:
            from flows.augment import run_augment  # Prefect loads with its output already diverted

            run_augment(config.to_json(), current.progress)
    except VaePipelineError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    finally:
        shutdown_ray()
    output_url = config.generation.output_url
    print_dataset_summary(console, output_url, time.perf_counter() - started)
    manifest = read_manifest(output_url)
    assert manifest is not None
    real = pa_ds.dataset(config.data.input_url).to_table()
    synthetic = pa_ds.dataset([f"{output_url}/{s.name}" for s in manifest.shards]).to_table()
    console.print(compare_columns(real, synthetic))
    grid = storage.join_url(default_evaluation_url(config.model_url), "plots", "images.png")
    if storage.exists(grid):
        console.print(f"real and synthetic images side by side: [bold]{grid}[/bold]")
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
    if is_image_type(column.type):
        pixels = image_values(column)
        return f"{'x'.join(map(str, pixels.shape[1:]))} {pixels.dtype}, mean pixel {pixels.mean():.1f}"
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return f"mean {pc.mean(column).as_py():.2f}  sd {pc.stddev(column).as_py():.2f}"
    counts = pc.value_counts(column.drop_null()).to_pylist()
    total = sum(c["counts"] for c in counts)
    top = sorted(counts, key=lambda c: -c["counts"])[:3]
    return ", ".join(f"{c['values']} {c['counts'] / total:.0%}" for c in top)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sys.exit(
        main(verbose="--verbose" in arguments, config_url=IMAGES_CONFIG_URL if "--images" in arguments else CONFIG_URL)
    )
