"""Images end to end: the flow on the shipped Fashion-MNIST slice, a CVAE on digits, the conv VAE on Ray Train."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.datasets import load_digits

from tests.integration.conftest import QUICK_EVALUATION, run_cli
from vae_pipeline.bundle import load_bundle
from vae_pipeline.config import parse_config
from vae_pipeline.fashion_mnist import CLASS_NAMES, SLICE_PATH
from vae_pipeline.generation.job import run_generation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.image_columns import image_array, image_type, image_values
from vae_pipeline.models.conv_vae import ConvVAE
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.readers.torch_dataset import SyntheticDataset
from vae_pipeline.training.job import run_training

SMALL_CONV = {"latent_dim": 8, "conv_channels": [8, 16], "hidden_dims": [64]}


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`vae-pipeline run` on the shipped slice: two epochs, a quick evaluation, 600 images in two shards."""
    root = tmp_path_factory.mktemp("images")
    config = {
        "data": {"input_url": SLICE_PATH, "label_column": "label"},
        "model_url": str(root / "model"),
        "model": SMALL_CONV,
        "training": {"epochs": 2, "executor": "local"},
        "statistics": {"executor": "local"},
        "evaluation": {**QUICK_EVALUATION, "rows": 200},
        "generation": {
            "rows": 600,
            "rows_per_shard": 300,
            "output_url": str(root / "synthetic"),
            "executor": "local",
            "num_workers": 1,
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, run_cli("run", "--config", str(path))


def test_the_flow_turns_labelled_images_into_labelled_images(
    flow_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, result = flow_run
    assert result.returncode == 0, result.stderr[-2000:]

    manifest = read_manifest(str(root / "synthetic"))
    assert manifest is not None and manifest.rows == 600 and len(manifest.shards) == 2
    table = pq.read_table([str(root / "synthetic" / shard.name) for shard in manifest.shards])
    # The input's own type comes back: the canonical tensor, uint8, (1, 28, 28), and the label's class names.
    assert table.schema.field("image").type == image_type((1, 28, 28))
    assert set(table.column("label").to_pylist()) <= set(CLASS_NAMES)
    pixels = image_values(table.column("image"))
    assert pixels.dtype == np.uint8 and pixels.std() > 10  # images, not a flat grey
    assert "plots/images.png" in result.stdout


def test_the_bundle_records_the_conv_architecture(flow_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = flow_run
    meta = json.loads((root / "model" / "bundle.json").read_text())

    assert meta["architecture"] == meta["model_config"]["architecture"] == "conv"
    assert isinstance(load_bundle(str(root / "model")).model, ConvVAE)


def test_the_report_scores_images(flow_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = flow_run
    evaluation = root / "model" / "evaluation"
    report = json.loads((evaluation / "report.json").read_text())

    floor = report["reference"]["image"]["frechet_floor"]
    for entry in report["samplers"]:
        image = entry["image"]
        assert image["frechet_distance"] > 0 and 0 <= image["precision"] <= 1 and 0 <= image["recall"] <= 1
        assert 0 <= image["tstr_accuracy"] <= 1 and 0 <= entry["composite"] <= 1
        assert "pixel_dcr_ratio" in entry["privacy"] and entry["privacy_ok"] in (True, False)
    assert floor > 0 and report["choice"] is not None
    assert (evaluation / "plots" / "images.png").stat().st_size > 10_000
    assert (evaluation / "classifier.safetensors").exists()


def test_a_training_job_reads_image_tensors(flow_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = flow_run
    batch = next(iter(SyntheticDataset(str(root / "synthetic"), batch_size=32, seed=0)))

    assert tuple(batch["image"].shape) == (32, 1, 28, 28)
    assert len(batch["label"]) == 32


def digits_table(rows: int) -> pa.Table:
    data = load_digits()
    images = np.rint(data.images[:rows] * 255 / 16).astype(np.uint8)[:, None]
    return pa.table({"image": image_array(images), "digit": pa.array([str(d) for d in data.target[:rows]])})


def test_a_conditional_conv_vae_draws_the_requested_class(tmp_path: Path) -> None:
    pq.write_table(digits_table(600), tmp_path / "digits.parquet")
    config = parse_config(
        {
            "data": {"input_url": str(tmp_path / "digits.parquet"), "label_column": "digit"},
            "model_url": str(tmp_path / "model"),
            "model": {**SMALL_CONV, "conditional": True},
            "training": {"epochs": 3, "executor": "local"},
            "statistics": {"executor": "local"},
            "sampler": {"name": "conditional", "classes": {"3": 0.5, "7": 0.5}},
            "generation": {"rows": 200, "output_url": str(tmp_path / "synthetic"), "privacy_guard": False},
        }
    )
    run_training(config)
    run_statistics(config, config.model_url)
    run_generation(config)

    manifest = read_manifest(str(tmp_path / "synthetic"))
    assert manifest is not None
    table = pq.read_table([str(tmp_path / "synthetic" / shard.name) for shard in manifest.shards])
    labels = table.column("digit").to_pylist()
    assert set(labels) == {"3", "7"} and labels.count("3") == pytest.approx(100, abs=30)
    assert load_bundle(config.model_url).model_config.condition_dim == 10


def test_the_conv_vae_trains_on_two_ray_train_workers(ray_instance: None, tmp_path: Path) -> None:
    """Two DDP workers: group norm needs no SyncBatchNorm, and Ray Data hands the workers the tensor column."""
    pq.write_table(digits_table(400), tmp_path / "digits.parquet")
    config = parse_config(
        {
            "data": {"input_url": str(tmp_path / "digits.parquet"), "label_column": "digit"},
            "model_url": str(tmp_path / "model"),
            "model": SMALL_CONV,
            "training": {"epochs": 2, "executor": "ray", "num_workers": 2},
            "ray": {"num_cpus": 2},
        }
    )
    bundle = load_bundle(run_training(config))

    assert isinstance(bundle.model, ConvVAE)
    assert [m["epoch"] for m in bundle.metrics] == [1, 2]
    assert all(np.isfinite(m["val_loss"]) for m in bundle.metrics)
