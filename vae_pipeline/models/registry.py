"""The model registry: `model.architecture` -> how to shape, build and reload a VAE.

`auto` picks `conv` for a table with an image column and `mlp` otherwise; the architecture is recorded in
bundle.json (inside the model config), so a bundle rebuilds the model it was trained as. A bundle written before
the registry has no architecture and is an MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vae_pipeline.config import ModelConfig
from vae_pipeline.errors import ConfigError
from vae_pipeline.layout import Span
from vae_pipeline.models.base import VAE, ModelShape
from vae_pipeline.models.conv_vae import ConvVAE, ConvVAEConfig
from vae_pipeline.models.mlp_vae import MLPVAE, MLPVAEConfig


@dataclass(frozen=True)
class Layout:
    """What a model's shape takes from the fitted transform."""

    spans: list[Span]
    data_dim: int
    condition_dim: int = 0
    image_shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Architecture:
    shape: Callable[[ModelConfig, Layout], ModelShape]
    from_json: Callable[[dict[str, Any]], ModelShape]
    build: Callable[[Any], VAE]


def _mlp_shape(model: ModelConfig, layout: Layout) -> MLPVAEConfig:
    if layout.image_shape is not None:
        raise ConfigError("model.architecture mlp cannot model an image column; set model.architecture: conv (or auto)")
    return MLPVAEConfig(layout.data_dim, model.latent_dim, list(model.hidden_dims), layout.spans, layout.condition_dim)


def _conv_shape(model: ModelConfig, layout: Layout) -> ConvVAEConfig:
    if layout.image_shape is None:
        raise ConfigError("model.architecture conv needs an image column; set model.architecture: mlp (or auto)")
    return ConvVAEConfig(
        data_dim=layout.data_dim,
        latent_dim=model.latent_dim,
        image_shape=list(layout.image_shape),
        spans=layout.spans,
        channels=list(model.conv_channels),
        hidden_dims=list(model.hidden_dims),
        condition_dim=layout.condition_dim,
        pixel_likelihood=model.pixel_likelihood,
    )


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(_mlp_shape, MLPVAEConfig.from_json, MLPVAE),
    "conv": Architecture(_conv_shape, ConvVAEConfig.from_json, ConvVAE),
}


def resolve_architecture(setting: str, *, has_image: bool) -> str:
    """The architecture `model.architecture` names; `auto` is conv for a table with an image column."""
    if setting == "auto":
        return "conv" if has_image else "mlp"
    if setting not in ARCHITECTURES:
        raise ConfigError(f"model.architecture must be auto or one of {sorted(ARCHITECTURES)}, not {setting!r}")
    return setting


def model_shape(model: ModelConfig, layout: Layout) -> ModelShape:
    """The model config for a pipeline's model settings and the transform's layout."""
    name = resolve_architecture(model.architecture, has_image=layout.image_shape is not None)
    return ARCHITECTURES[name].shape(model, layout)


def shape_from_json(data: dict[str, Any]) -> ModelShape:
    """Rebuild a model config from bundle.json; no `architecture` key is a bundle from before the registry."""
    name = data.get("architecture", "mlp")
    if name not in ARCHITECTURES:
        raise ConfigError(f"this bundle's model architecture {name!r} is unknown here; upgrade vae-pipeline")
    return ARCHITECTURES[name].from_json(data)


def build(shape: ModelShape) -> VAE:
    """A freshly initialised model of `shape`; seed with `torch.manual_seed` first for reproducible weights."""
    return ARCHITECTURES[shape.architecture].build(shape)
