"""ConvVAE: shapes for odd and tiny images, every pixel likelihood, conditioning, DDP-safe parameters, the registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import ContinuousBernoulli

from vae_pipeline.config import ModelConfig
from vae_pipeline.errors import ConfigError
from vae_pipeline.layout import Span
from vae_pipeline.models.base import FeatureMajorDecoder, LatentAffineFoldable
from vae_pipeline.models.conv_vae import ConvVAE, ConvVAEConfig, feature_sizes
from vae_pipeline.models.mlp_vae import MLPVAE
from vae_pipeline.models.registry import Layout, build, model_shape, resolve_architecture, shape_from_json

L, B = 4, 6


def layout(shape: tuple[int, int, int]) -> tuple[list[Span], int]:
    """A label of 3 classes, the image, then one continuous column: the image sits between tabular slots."""
    pixels = math.prod(shape)
    spans = [
        Span("softmax", 0, 3, "label"),
        Span("image", 3, 3 + pixels, "image"),
        Span("gaussian", 3 + pixels, 4 + pixels, "x"),
    ]
    return spans, pixels + 4


def make(shape: tuple[int, int, int], likelihood: str = "bernoulli", condition_dim: int = 0) -> ConvVAE:
    torch.manual_seed(0)
    spans, dim = layout(shape)
    return ConvVAE(ConvVAEConfig(dim, L, list(shape), spans, [8, 16], [32], condition_dim, likelihood))


def batch(shape: tuple[int, int, int]) -> torch.Tensor:
    _, dim = layout(shape)
    x = torch.rand(B, dim, generator=torch.Generator().manual_seed(1))
    x[:, :3] = torch.eye(3)[torch.arange(B) % 3]
    return x


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 7, 9), (2, 5, 4)])
def test_odd_and_tiny_images_round_trip_through_encoder_and_decoder(shape: tuple[int, int, int]) -> None:
    model = make(shape)
    x = batch(shape)

    mu, logvar = model.encode(x)
    raw = model.decode(mu)

    assert mu.shape == logvar.shape == (B, L)
    assert raw.shape == x.shape
    image, tabular = model.split(x)
    assert image.shape == (B, *shape)
    assert torch.equal(model.join(image, tabular), x)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_every_likelihood_trains_every_parameter(likelihood: str) -> None:
    model = make((1, 8, 8), likelihood)
    out = model(batch((1, 8, 8)), beta=0.5)
    out.loss.backward()

    # DistributedDataParallel stalls on a parameter that no loss reaches.
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    assert torch.isfinite(out.loss)
    assert ("pixel_log_sigma" in dict(model.named_parameters())) == (likelihood == "gaussian")


def test_continuous_bernoulli_matches_torch_distribution() -> None:
    model = make((1, 8, 8), "continuous_bernoulli")
    logits = torch.randn(B, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    image = torch.rand(B, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    expected = -ContinuousBernoulli(logits=logits).log_prob(image).flatten(1).sum(1)

    assert torch.allclose(model.pixel_nll(logits, image), expected)


def test_generated_rows_are_mean_pixels_and_drawn_one_hot_labels() -> None:
    model = make((1, 8, 8))
    z = torch.randn(B, L, generator=torch.Generator().manual_seed(4))

    first = model.generate(z, generator=torch.Generator().manual_seed(5))
    again = model.generate(z, generator=torch.Generator().manual_seed(5))

    assert torch.equal(first, again)
    assert torch.equal(first[:, :3].sum(1), torch.ones(B))
    pixels = first[:, 3:67]
    assert torch.allclose(pixels, torch.sigmoid(model.decode(z)[:, 3:67]))  # the mean: no per-pixel noise
    assert float(first[:, -1].min()) >= -1.0 and float(first[:, -1].max()) <= 1.0


def test_conditional_model_needs_its_condition() -> None:
    model = make((1, 8, 8), condition_dim=2)
    x, c = batch((1, 8, 8)), torch.eye(2)[torch.arange(B) % 2]

    assert torch.isfinite(model(x, c).loss)
    with pytest.raises(ValueError, match=r"needs c of shape \(B, 2\)"):
        model.encode(x)


def test_config_round_trips_through_json_with_its_architecture() -> None:
    config = make((3, 7, 9), "gaussian", condition_dim=2).config

    data = config.to_json()

    assert data["architecture"] == "conv"
    assert shape_from_json(data) == config


def test_image_too_small_for_the_blocks_is_refused() -> None:
    with pytest.raises(ConfigError, match="too small for 3 stride-2 conv blocks"):
        feature_sizes([4, 4], 3)


def test_registry_picks_conv_for_images_and_mlp_otherwise() -> None:
    spans, dim = layout((1, 8, 8))
    image_layout = Layout(spans, dim, image_shape=(1, 8, 8))
    table_layout = Layout([Span("softmax", 0, 3, "label")], 3)

    conv = build(model_shape(ModelConfig(latent_dim=L, conv_channels=[8]), image_layout))
    mlp = build(model_shape(ModelConfig(latent_dim=L), table_layout))

    assert isinstance(conv, ConvVAE) and isinstance(mlp, MLPVAE)
    assert resolve_architecture("auto", has_image=True) == "conv"
    # The MLP's fast generation paths are optional capabilities the conv model does not claim.
    assert isinstance(mlp, FeatureMajorDecoder) and isinstance(mlp, LatentAffineFoldable)
    assert not isinstance(conv, FeatureMajorDecoder) and not isinstance(conv, LatentAffineFoldable)
    with pytest.raises(ConfigError, match="mlp cannot model an image column"):
        model_shape(ModelConfig(architecture="mlp"), image_layout)
    with pytest.raises(ConfigError, match="conv needs an image column"):
        model_shape(ModelConfig(architecture="conv"), table_layout)


def test_a_bundle_from_before_the_registry_is_an_mlp() -> None:
    data = {"data_dim": 3, "latent_dim": 2, "hidden_dims": [4], "spans": [Span("softmax", 0, 3, "c").to_json()]}

    assert isinstance(build(shape_from_json(data)), MLPVAE)
