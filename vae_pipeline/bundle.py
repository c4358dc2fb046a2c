"""The model bundle: everything generation needs, rebuildable from its files alone.

Layout under the bundle URL:
    model.safetensors   decoder and encoder weights
    bundle.json         model config, transform state (with every column's role and why), pipeline config,
                        per-epoch metrics, fingerprint (the commit)

The fingerprint hashes the weights and the JSON that gives them meaning, so statistics and synthetic datasets
can prove which model they came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from vae_pipeline import storage
from vae_pipeline.config import PipelineConfig, parse_config
from vae_pipeline.errors import StorageError
from vae_pipeline.models.base import VAE, ModelShape
from vae_pipeline.models.registry import build, shape_from_json
from vae_pipeline.transforms.table import TableTransform

BUNDLE_FORMAT = "vae-pipeline/bundle/v1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "bundle.json"
STATISTICS_DIR = "statistics"


def default_statistics_url(model_url: str) -> str:
    """Statistics live beside the bundle they were computed for."""
    return storage.join_url(model_url, STATISTICS_DIR)


@dataclass
class ModelBundle:
    """A trained model with its transform and the config that produced it."""

    model: VAE
    model_config: ModelShape
    transform: TableTransform
    config: PipelineConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""

    def summary(self) -> dict[str, Any]:
        last = self.metrics[-1] if self.metrics else {}
        return {
            "fingerprint": self.fingerprint,
            "columns": self.transform.column_kinds(),
            "roles": {
                name: {"role": role, "reason": reason} for name, (role, reason) in self.transform.column_roles().items()
            },
            "label_column": self.transform.label_column,
            "conditional": self.transform.conditional,
            "architecture": self.model_config.architecture,
            "latent_dim": self.model_config.latent_dim,
            "hidden_dims": list(getattr(self.model_config, "hidden_dims", [])),
            "data_dim": self.model_config.data_dim,
            "epochs_trained": len(self.metrics),
            "final_metrics": {k: v for k, v in last.items() if not isinstance(v, list)},
        }


def weights_bytes(model: torch.nn.Module) -> bytes:
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    return save_tensors(state)


def fingerprint_of(weights: bytes, model_config: dict[str, Any], transform_state: dict[str, Any]) -> str:
    digest = hashlib.sha256(weights)
    digest.update(storage.canonical_json(model_config).encode())
    digest.update(storage.canonical_json(transform_state).encode())
    return digest.hexdigest()


def save_bundle(
    url: str,
    model: VAE,
    model_config: ModelShape,
    transform: TableTransform,
    config: PipelineConfig,
    metrics: list[dict[str, Any]],
) -> ModelBundle:
    """Write weights first and bundle.json last: a bundle without its JSON is not a bundle."""
    weights = weights_bytes(model)
    transform_state = transform.state_dict()
    fingerprint = fingerprint_of(weights, model_config.to_json(), transform_state)
    storage.atomic_write(storage.join_url(url, WEIGHTS_FILE), weights)
    meta = {
        "format": BUNDLE_FORMAT,
        "fingerprint": fingerprint,
        "architecture": model_config.architecture,
        "model_config": model_config.to_json(),
        "transform": transform_state,
        "config": config.to_json(),
        "metrics": metrics,
    }
    storage.write_json(storage.join_url(url, META_FILE), meta)
    return ModelBundle(model, model_config, transform, config, metrics, fingerprint)


def stored_fingerprint(url: str) -> str | None:
    """The fingerprint bundle.json records, without reading the weights; None when there is no bundle."""
    meta_url = storage.join_url(url, META_FILE)
    if not storage.exists(meta_url):
        return None
    fingerprint = storage.read_json(meta_url).get("fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def load_bundle(url: str) -> ModelBundle:
    """Rebuild a bundle from its files; the model comes back in eval mode on the CPU."""
    meta_url = storage.join_url(url, META_FILE)
    if not storage.exists(meta_url):
        raise StorageError(
            f"no model bundle at {storage.redact_url(url)} (missing {META_FILE}); run `vae-pipeline train`"
        )
    meta = storage.read_json(meta_url)
    if meta.get("format") != BUNDLE_FORMAT:
        raise StorageError(
            f"{storage.redact_url(meta_url)} is not a {BUNDLE_FORMAT} bundle (format {meta.get('format')!r})"
        )
    weights = storage.read_bytes(storage.join_url(url, WEIGHTS_FILE))
    if fingerprint_of(weights, meta["model_config"], meta["transform"]) != meta["fingerprint"]:
        raise StorageError(f"bundle at {storage.redact_url(url)} is damaged: its weights do not match its fingerprint")
    model_config = shape_from_json(meta["model_config"])
    model = build(model_config)
    model.load_state_dict(load_tensors(weights))
    model.eval()
    transform = TableTransform.from_state_dict(meta["transform"])
    config = parse_config(meta["config"], source=meta_url)
    return ModelBundle(model, model_config, transform, config, meta["metrics"], meta["fingerprint"])
