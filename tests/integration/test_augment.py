"""`vae-pipeline augment` on the penguins table (152 Adelie, 124 Gentoo, 68 Chinstrap): exact per-class counts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import PENGUINS
from tests.integration.conftest import QUICK_EVALUATION, run_cli
from vae_pipeline.config import parse_config
from vae_pipeline.data import open_source
from vae_pipeline.errors import ConfigError
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.readers.torch_dataset import SyntheticDataset
from vae_pipeline.training.job import run_training

REAL = {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}


def dataset(output_url: str) -> pa.Table:
    manifest = read_manifest(output_url)
    assert manifest is not None
    return pq.read_table([f"{output_url}/{shard.name}" for shard in manifest.shards])


def per_class(table: pa.Table, synthetic: bool) -> dict[str, int]:
    rows = table.filter(pc.equal(table.column("synthetic"), synthetic)).column("species")
    return {entry["values"]: entry["counts"] for entry in pc.value_counts(rows).to_pylist()}


@pytest.fixture(scope="module")
def augmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("augment")
    config = root / "config.yaml"
    config.write_text(json.dumps({"model": {"latent_dim": 4, "hidden_dims": [32, 32]}, "evaluation": QUICK_EVALUATION}))
    result = run_cli(
        "augment", "--config", str(config), "--input", PENGUINS, "--label", "species", "--output",
        str(root / "out"), "--model", str(root / "model"), "--epochs", "20", "--workers", "1",
    )  # fmt: skip
    return root, result


def test_augment_balances_every_class_with_exact_counts(
    augmented: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, result = augmented
    assert result.returncode == 0, result.stderr[-2000:]

    table = dataset(str(root / "out"))

    assert per_class(table, synthetic=False) == REAL
    assert per_class(table, synthetic=True) == {"Gentoo": 28, "Chinstrap": 84}  # Adelie is the majority
    assert table.schema.field("synthetic").type == pa.bool_()
    assert "augmented to balance" in result.stdout


def test_the_real_rows_are_the_input_rows_unchanged(augmented: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = augmented
    table = dataset(str(root / "out"))
    real = table.filter(pc.invert(table.column("synthetic"))).drop_columns(["synthetic"])

    source = open_source(parse_config({"data": {"input_url": PENGUINS}}).data)
    expected = pa.Table.from_batches(list(source.batches())).select(real.column_names)

    assert real.equals(expected)


def test_the_manifest_records_rows_per_class_and_source(
    augmented: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = augmented
    manifest = read_manifest(str(root / "out"))
    assert manifest is not None

    classes = manifest.extra["augment"]["classes"]

    assert {name: counts["real"] for name, counts in classes.items()} == REAL
    assert classes["Chinstrap"]["synthetic"] == 84 and manifest.rows == 344 + 112
    assert manifest.extra["augment"]["provenance_column"] == "synthetic"


def library_config(root: Path, **sections: object) -> object:
    base = {
        "data": {"input_url": PENGUINS, "label_column": "species"},
        "model_url": str(root / "model"),
        "model": {"latent_dim": 4, "hidden_dims": [32, 32]},
        "training": {"epochs": 10, "executor": "local"},
        "statistics": {"executor": "local"},
        "evaluation": QUICK_EVALUATION,
        "generation": {"output_url": str(root / "out"), "executor": "local", "num_workers": 1, "rows_per_shard": 40},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}  # type: ignore[dict-item]
    return parse_config(base)


def test_a_cvae_tops_up_exact_counts_with_any_sampler_synthetic_only(tmp_path: Path) -> None:
    config = library_config(
        tmp_path,
        model={"conditional": True},
        sampler={"name": "gmm"},
        augment={"enabled": True, "target": "Chinstrap=100,Gentoo=130", "synthetic_only": True},
        generation={"privacy_guard": False},
    )
    run_training(config)  # type: ignore[arg-type]
    run_statistics(config, config.model_url)  # type: ignore[attr-defined]
    run_generation(config)  # type: ignore[arg-type]

    table = dataset(str(tmp_path / "out"))

    assert per_class(table, synthetic=True) == {"Chinstrap": 32, "Gentoo": 6}  # across shards of 40 rows
    assert table.num_rows == 38 and pc.all(table.column("synthetic")).as_py()


def test_a_plain_model_with_a_classless_sampler_is_refused_before_writing(tmp_path: Path) -> None:
    config = library_config(
        tmp_path, sampler={"name": "gaussian"}, augment={"enabled": True}, generation={"privacy_guard": False}
    )
    run_training(config)  # type: ignore[arg-type]
    run_statistics(config, config.model_url)  # type: ignore[attr-defined]

    with pytest.raises(ConfigError, match="draws no particular class, and this model is not conditional"):
        run_generation(config)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_auto_picks_the_best_conditional_candidate_for_a_plain_model(tmp_path: Path) -> None:
    config = library_config(tmp_path, augment={"enabled": True, "target": "ratio:0.6"})
    run_training(config)  # type: ignore[arg-type]
    run_statistics(config, config.model_url)  # type: ignore[attr-defined]
    run_evaluation(config)  # type: ignore[arg-type]
    run_generation(config)  # type: ignore[arg-type]

    manifest = read_manifest(str(tmp_path / "out"))

    assert manifest is not None and manifest.sampler["name"] == "conditional"
    assert per_class(dataset(str(tmp_path / "out")), synthetic=True) == {"Chinstrap": 24}  # ceil(0.6 * 152) - 68


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--label", "island", "--target", "Atlantis=5"], "unknown class(es) ['Atlantis']"),
        (["--label", "species", "--target", "Adelie=-1"], "the count of class 'Adelie' is negative"),
        (["--target", "balance"], "augment needs the label to balance; pass --label COLUMN"),
        (["--label", "species", "--provenance-column", "island"], "'island' is already a column of the input"),
    ],
)
def test_bad_augment_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = run_cli(
        "augment", "--input", PENGUINS, "--output", str(tmp_path / "out"), "--model", str(tmp_path / "model"), *args
    )

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "model").exists()


def test_a_training_job_reads_the_provenance_as_a_boolean_tensor(
    augmented: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = augmented
    batches = list(SyntheticDataset(str(root / "out"), batch_size=64))
    flags = torch.cat([batch["synthetic"] for batch in batches])

    assert flags.dtype == torch.bool and int(flags.sum()) == 112 and len(flags) == 456
    without = next(iter(SyntheticDataset(str(root / "out"), batch_size=8, columns=["species", "bill_length_mm"])))
    assert set(without) == {"species", "bill_length_mm"}
