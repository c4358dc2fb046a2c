"""bundle.py: a tiny real bundle (penguins, a few training steps, no Ray) saved, loaded and checked.

`fit_tiny_bundle` is shared with tests/unit/generation/test_worker.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from vae_pipeline import storage
from vae_pipeline.bundle import (
    META_FILE,
    WEIGHTS_FILE,
    ModelBundle,
    default_statistics_url,
    load_bundle,
    save_bundle,
    weights_bytes,
)
from vae_pipeline.config import DataConfig, PipelineConfig, TrainingConfig
from vae_pipeline.data import TableSource, open_source
from vae_pipeline.errors import StorageError
from vae_pipeline.models.mlp_vae import MLPVAE, MLPVAEConfig, build_model
from vae_pipeline.training.checkpoint import TrainingState
from vae_pipeline.training.epochs import run_epochs
from vae_pipeline.training.loop import make_optimizer, tensor_batches
from vae_pipeline.transforms.table import TableTransform

REPO = Path(__file__).resolve().parents[2]
PENGUINS = str(REPO / "data" / "penguins.parquet")


@dataclass
class TinyFit:
    """What the bundle and worker tests need: the source, its table, a fitted transform and a trained model."""

    source: TableSource
    table: pa.Table
    transform: TableTransform
    model: MLPVAE
    model_config: MLPVAEConfig
    metrics: list[dict[str, float]]


def fit_tiny_bundle(*, conditional: bool, epochs: int = 5) -> TinyFit:
    """Fit a transform and a 4-dim latent VAE on penguins for a few epochs (under a second on a CPU)."""
    data_config = DataConfig(
        input_url=PENGUINS, fit_sample_rows=500, max_modes=3, label_column="species" if conditional else None
    )
    source = open_source(data_config)
    transform = TableTransform.fit(source.batches(128), source.schema, data_config, conditional=conditional, seed=0)
    table = pa.Table.from_batches(list(source.batches()), schema=source.schema)
    x = torch.from_numpy(transform.transform(table))
    c = torch.from_numpy(transform.condition(transform.label_codes(table))) if conditional else None
    model_config = MLPVAEConfig(
        data_dim=transform.output_dim,
        latent_dim=4,
        hidden_dims=[16],
        spans=transform.spans,
        condition_dim=len(transform.label_classes) if conditional else 0,
    )
    torch.manual_seed(0)
    model = build_model(model_config)
    training = TrainingConfig(learning_rate=1e-2, beta=1.0, epochs=epochs)
    optimizer = make_optimizer(model, training)

    def batches(split: str, epoch: int) -> Any:
        if split == "validation":
            return []
        return tensor_batches(x, c, batch_size=64, generator=torch.Generator().manual_seed(epoch))

    history = run_epochs(model, optimizer, TrainingState(0, "k"), training, batches, "cpu", lambda *_: None).metrics
    model.eval()
    metrics = [{"epoch": h["epoch"], "train_loss": h["train_loss"]} for h in history]
    return TinyFit(source, table, transform, model, model_config, metrics)


def pipeline_config(conditional: bool) -> PipelineConfig:
    if not conditional:
        return PipelineConfig()
    return PipelineConfig().with_overrides({"data.label_column": "species", "model.conditional": True})


@pytest.fixture(scope="module")
def tiny() -> TinyFit:
    return fit_tiny_bundle(conditional=False)


@pytest.fixture()
def saved(tiny: TinyFit, tmp_path: Path) -> tuple[str, ModelBundle]:
    url = str(tmp_path / "model")
    bundle = save_bundle(url, tiny.model, tiny.model_config, tiny.transform, PipelineConfig(), metrics=tiny.metrics)
    return url, bundle


def test_training_made_progress(tiny: TinyFit) -> None:
    losses = [m["train_loss"] for m in tiny.metrics]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_save_writes_two_files(saved: tuple[str, ModelBundle]) -> None:
    url, bundle = saved
    assert sorted(Path(u).name for u in storage.list_urls(url)) == [META_FILE, WEIGHTS_FILE]
    meta = storage.read_json(storage.join_url(url, META_FILE))
    assert meta["format"] == "vae-pipeline/bundle/v1"
    assert meta["fingerprint"] == bundle.fingerprint
    assert len(bundle.fingerprint) == 64


def test_round_trip(tiny: TinyFit, saved: tuple[str, ModelBundle]) -> None:
    url, bundle = saved
    loaded = load_bundle(url)

    assert loaded.fingerprint == bundle.fingerprint
    assert loaded.model_config == tiny.model_config
    assert loaded.transform.state_dict() == tiny.transform.state_dict()
    assert loaded.transform.schema.equals(tiny.source.schema)
    assert loaded.config == PipelineConfig()
    assert loaded.metrics == tiny.metrics
    assert not loaded.model.training
    assert weights_bytes(loaded.model) == weights_bytes(tiny.model)

    x = torch.from_numpy(loaded.transform.transform(tiny.table))
    np.testing.assert_array_equal(x.numpy(), tiny.transform.transform(tiny.table))
    with torch.inference_mode():
        mu_a, logvar_a = tiny.model.encode(x)
        mu_b, logvar_b = loaded.model.encode(x)
    torch.testing.assert_close(mu_a, mu_b, rtol=0, atol=0)
    torch.testing.assert_close(logvar_a, logvar_b, rtol=0, atol=0)


def test_fingerprint_stable_and_sensitive_to_weights(
    tiny: TinyFit, saved: tuple[str, ModelBundle], tmp_path: Path
) -> None:
    _, bundle = saved
    again = save_bundle(str(tmp_path / "again"), tiny.model, tiny.model_config, tiny.transform, PipelineConfig(), [])
    assert again.fingerprint == bundle.fingerprint  # metrics and pipeline config are not part of the identity

    torch.manual_seed(1)
    other = build_model(tiny.model_config)
    changed = save_bundle(str(tmp_path / "other"), other, tiny.model_config, tiny.transform, PipelineConfig(), [])
    assert changed.fingerprint != bundle.fingerprint


def test_summary(saved: tuple[str, ModelBundle], tiny: TinyFit) -> None:
    summary = load_bundle(saved[0]).summary()
    assert summary["latent_dim"] == 4
    assert summary["hidden_dims"] == [16]
    assert summary["data_dim"] == tiny.transform.output_dim
    assert summary["epochs_trained"] == len(tiny.metrics)
    assert summary["conditional"] is False
    assert list(summary["columns"]) == tiny.source.columns


def test_damaged_weights(saved: tuple[str, ModelBundle]) -> None:
    url, _ = saved
    weights_url = storage.join_url(url, WEIGHTS_FILE)
    data = bytearray(storage.read_bytes(weights_url))
    data[-1] ^= 0xFF  # flip one byte of the last tensor
    storage.atomic_write(weights_url, bytes(data))
    with pytest.raises(StorageError, match="damaged"):
        load_bundle(url)


def test_weights_replaced_by_junk(saved: tuple[str, ModelBundle]) -> None:
    url, _ = saved
    storage.atomic_write(storage.join_url(url, WEIGHTS_FILE), b"not safetensors")
    with pytest.raises(StorageError, match="damaged"):
        load_bundle(url)


def test_missing_weights(saved: tuple[str, ModelBundle]) -> None:
    url, _ = saved
    storage.remove(storage.join_url(url, WEIGHTS_FILE))
    with pytest.raises(StorageError, match=r"model\.safetensors does not exist"):
        load_bundle(url)


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="`vae-pipeline train`") as info:
        load_bundle(str(tmp_path / "nowhere"))
    assert "nowhere" in str(info.value)


def test_wrong_format(saved: tuple[str, ModelBundle]) -> None:
    url, _ = saved
    meta_url = storage.join_url(url, META_FILE)
    meta = storage.read_json(meta_url)
    meta["format"] = "something/else"
    storage.write_json(meta_url, meta)
    with pytest.raises(StorageError, match="not a vae-pipeline/bundle/v1 bundle"):
        load_bundle(url)


def test_tampered_transform_state_is_detected(saved: tuple[str, ModelBundle]) -> None:
    url, _ = saved
    meta_url = storage.join_url(url, META_FILE)
    meta = json.loads(storage.read_bytes(meta_url))
    meta["transform"]["label_column"] = "island"
    storage.write_json(meta_url, meta)
    with pytest.raises(StorageError, match="damaged"):
        load_bundle(url)


def test_default_statistics_url() -> None:
    assert default_statistics_url("s3://b/model/") == "s3://b/model/statistics"


def test_conditional_round_trip(tmp_path: Path) -> None:
    fitted = fit_tiny_bundle(conditional=True, epochs=1)
    url = str(tmp_path / "cvae")
    config = pipeline_config(conditional=True)
    bundle = save_bundle(url, fitted.model, fitted.model_config, fitted.transform, config, fitted.metrics)
    loaded = load_bundle(url)
    assert loaded.fingerprint == bundle.fingerprint
    assert loaded.config == config
    assert loaded.transform.conditional and loaded.transform.label_classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert loaded.model_config.condition_dim == 3
    x = torch.from_numpy(fitted.transform.transform(fitted.table))
    c = torch.from_numpy(fitted.transform.condition(fitted.transform.label_codes(fitted.table)))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.encode(x, c), fitted.model.encode(x, c), rtol=0, atol=0)
