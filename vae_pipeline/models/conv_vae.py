"""A (conditional) convolutional VAE over a table with one image column and optional tabular columns.

The data vector is the transform's: the image column is one `image` span of C*H*W pixels in [0, 1] (flat, in
(C, H, W) order), the other columns are the usual spans (a label, numbers, categories). The encoder runs stride-2
convolutions over the image (pythae's MNIST networks are the reference shape, at CPU size), concatenates the
tabular slots and the condition, and maps them through `hidden_dims` to (mu, logvar); the decoder mirrors it with
transposed convolutions, and a linear head gives the tabular slots. Shapes: B rows, D = data_dim, L = latent_dim,
C = condition_dim; the image is (B, Ch, H, W).

Pixel likelihoods (`pixel_likelihood`):
    bernoulli             BCE with logits on [0, 1] pixels (Kingma & Welling 2014 on MNIST);
    continuous_bernoulli  the normalised Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 7);
    gaussian              N(x; sigmoid(raw), sigma_ch²) with one learned scale per channel.
The generated image is the likelihood's mean: a per-pixel draw adds independent salt-and-pepper noise that no
real image has, which is why VAE samples are shown as means (the tabular slots are drawn, as in the MLP VAE).

Group norm rather than batch norm: its statistics are per example, so DDP workers on Ray Train need no
SyncBatchNorm and a model behaves the same in training and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import ContinuousBernoulli

from vae_pipeline.errors import ConfigError
from vae_pipeline.layout import Span
from vae_pipeline.models.base import VAE
from vae_pipeline.models.losses import LossOutput, SpanIndex, elbo_terms, kl_per_dim, reconstruction_nll
from vae_pipeline.models.mlp_vae import LOG_SIGMA_INIT, LOGVAR_MAX, LOGVAR_MIN, mlp
from vae_pipeline.models.span_draws import draw_feature_major, grouped_slots

PIXEL_LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


@dataclass
class ConvVAEConfig:
    """Everything needed to rebuild the model; stored next to its weights (with `architecture: conv`)."""

    architecture: ClassVar[str] = "conv"

    data_dim: int
    latent_dim: int
    image_shape: list[int]  # (C, H, W)
    spans: list[Span]
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden_dims: list[int] = field(default_factory=lambda: [256])
    condition_dim: int = 0
    pixel_likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.condition_dim < 0 or len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ConfigError(
                f"ConvVAEConfig needs latent_dim >= 1, condition_dim >= 0 and a (C, H, W) image shape; got "
                f"{self.latent_dim}, {self.condition_dim}, {self.image_shape}"
            )
        if self.pixel_likelihood not in PIXEL_LIKELIHOODS:
            raise ConfigError(f"pixel_likelihood must be one of {PIXEL_LIKELIHOODS}, not {self.pixel_likelihood!r}")
        images = [span for span in self.spans if span.kind == "image"]
        if len(images) != 1 or images[0].width != math.prod(self.image_shape):
            raise ConfigError(
                f"the conv VAE needs exactly one image span of {math.prod(self.image_shape)} slots; got "
                f"{[(span.column, span.width) for span in images]}"
            )
        feature_sizes(self.image_shape[1:], len(self.channels))  # refuses an image too small for the blocks

    @property
    def image_span(self) -> Span:
        return next(span for span in self.spans if span.kind == "image")

    @property
    def tabular_spans(self) -> list[Span]:
        """The other spans, re-laid over the vector without the image's slots (what the tabular head sees)."""
        image = self.image_span

        def shift(slot: int) -> int:
            return slot - image.width if slot >= image.end else slot

        others = [span for span in self.spans if span.kind != "image"]
        return [
            Span(s.kind, shift(s.start), shift(s.end), s.column, None if s.mask is None else shift(s.mask))
            for s in others
        ]

    @property
    def tabular_dim(self) -> int:
        return self.data_dim - self.image_span.width

    def to_json(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "image_shape": list(self.image_shape),
            "spans": [span.to_json() for span in self.spans],
            "channels": list(self.channels),
            "hidden_dims": list(self.hidden_dims),
            "condition_dim": self.condition_dim,
            "pixel_likelihood": self.pixel_likelihood,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvVAEConfig:
        fields = {key: value for key, value in data.items() if key != "architecture"}
        fields["spans"] = [Span.from_json(span) for span in fields["spans"]]
        return cls(**fields)


def feature_sizes(size: list[int], blocks: int) -> list[tuple[int, int]]:
    """(H, W) after each stride-2 block (kernel 4, padding 1 halves and floors), the input first."""
    sizes = [(int(size[0]), int(size[1]))]
    for _ in range(blocks):
        height, width = sizes[-1]
        if height < 2 or width < 2:
            raise ConfigError(
                f"an image of {size[0]}x{size[1]} is too small for {blocks} stride-2 conv blocks; "
                "use fewer model.conv_channels"
            )
        sizes.append((height // 2, width // 2))
    return sizes


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvEncoder(nn.Module):
    """q(z | image, tabular, c) = N(mu, diag(exp(logvar)))."""

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = config.image_shape[0]
        for out_channels in config.channels:
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), _norm(out_channels), nn.ReLU()]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers, nn.Flatten())
        height, width = feature_sizes(config.image_shape[1:], len(config.channels))[-1]
        flat = in_channels * height * width
        self.body = mlp(flat + config.tabular_dim + config.condition_dim, config.hidden_dims)
        self.head = nn.Linear(config.hidden_dims[-1], 2 * config.latent_dim)

    def forward(self, image: Tensor, rest: Tensor) -> tuple[Tensor, Tensor]:
        features = torch.cat([self.convs(image), rest], dim=1)  # (B, F + T + C)
        mu, logvar = self.head(self.body(features)).chunk(2, dim=-1)  # (B, L), (B, L)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class ConvDecoder(nn.Module):
    """p(image, tabular | z, c): pixel logits (B, Ch, H, W) and the tabular slots' raw output (B, T)."""

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__()
        sizes = feature_sizes(config.image_shape[1:], len(config.channels))
        channels = list(reversed(config.channels))
        self.start_shape = (channels[0], *sizes[-1])
        self.body = mlp(config.latent_dim + config.condition_dim, list(reversed(config.hidden_dims)))
        self.to_features = nn.Linear(config.hidden_dims[0], math.prod(self.start_shape))
        layers: list[nn.Module] = [nn.ReLU()]
        targets = list(reversed(sizes[:-1]))  # the size each transposed block must restore
        for index, (height, width) in enumerate(targets):
            source = sizes[len(sizes) - 1 - index]
            # 2 * in + output_padding = the encoder's size before it floored an odd size away.
            padding = (height - 2 * source[0], width - 2 * source[1])
            out_channels = channels[index + 1] if index + 1 < len(channels) else channels[-1]
            layers += [
                nn.ConvTranspose2d(channels[index], out_channels, 4, stride=2, padding=1, output_padding=padding),
                _norm(out_channels),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(channels[-1], config.image_shape[0], 3, padding=1))
        self.deconvs = nn.Sequential(*layers)
        self.tabular_head = nn.Linear(config.hidden_dims[0], config.tabular_dim) if config.tabular_dim else None

    def forward(self, zc: Tensor) -> tuple[Tensor, Tensor | None]:
        hidden = self.body(zc)  # (B, H)
        start = self.to_features(hidden).view(-1, *self.start_shape)  # (B, ch, h, w)
        tabular = None if self.tabular_head is None else self.tabular_head(hidden)  # (B, T)
        return self.deconvs(start), tabular


class ConvVAE(VAE):
    """A VAE (or CVAE when `condition_dim > 0`) whose image span is modelled by convolutions."""

    log_sigma: Tensor
    pixel_log_sigma: Tensor
    grouped_order: Tensor
    original_order: Tensor

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__()
        self.config = config
        image = config.image_span
        self.image_slice = (image.start, image.end)
        self.tabular_index = SpanIndex(config.tabular_spans, config.tabular_dim)
        self.register_buffer("grouped_order", grouped_slots(self.tabular_index), persistent=False)
        self.register_buffer("original_order", torch.argsort(self.grouped_order), persistent=False)
        self.encoder = ConvEncoder(config)
        self.decoder = ConvDecoder(config)
        # A parameter that no loss touches would stall DistributedDataParallel's gradient reduction: unused
        # scales are buffers.
        sigma = torch.full((self.tabular_index.n_gaussian,), LOG_SIGMA_INIT)  # (G,)
        self._parameter_or_buffer("log_sigma", sigma, self.tabular_index.n_gaussian > 0)
        pixel_sigma = torch.full((config.image_shape[0],), LOG_SIGMA_INIT)  # (Ch,)
        self._parameter_or_buffer("pixel_log_sigma", pixel_sigma, config.pixel_likelihood == "gaussian")

    def _parameter_or_buffer(self, name: str, value: Tensor, learned: bool) -> None:
        if learned:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) vector -> image (B, Ch, H, W) and tabular slots (B, T)."""
        start, end = self.image_slice
        image = x[:, start:end].reshape(-1, *self.config.image_shape)
        return image, torch.cat([x[:, :start], x[:, end:]], dim=1)

    def join(self, image: Tensor, tabular: Tensor | None) -> Tensor:
        """Image (B, Ch, H, W) and tabular slots (B, T) -> the (B, D) vector layout."""
        start, _ = self.image_slice
        flat = image.reshape(image.shape[0], -1)
        if tabular is None:
            return flat
        return torch.cat([tabular[:, :start], flat, tabular[:, start:]], dim=1)

    def _condition(self, c: Tensor | None, rows: int, dtype: torch.dtype) -> Tensor | None:
        if self.config.condition_dim == 0:
            if c is not None:
                raise ValueError("this model is unconditional (condition_dim=0); call it without c")
            return None
        if c is None or c.shape != (rows, self.config.condition_dim):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"this model needs c of shape (B, {self.config.condition_dim}); got {got}")
        return c.to(dtype)

    def encode(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        image, tabular = self.split(x)
        condition = self._condition(c, x.shape[0], x.dtype)
        rest = tabular if condition is None else torch.cat([tabular, condition], dim=1)  # (B, T + C)
        return self.encoder(image, rest)

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """(B, L) -> (B, D) raw output: pixel logits at the image span, the tabular raw values elsewhere."""
        condition = self._condition(c, z.shape[0], z.dtype)
        logits, tabular = self.decoder(z if condition is None else torch.cat([z, condition], dim=1))
        return self.join(logits, tabular)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014, eq. 10 with one sample)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (B, L)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(
        self, x: Tensor, c: Tensor | None = None, *, beta: float = 1.0, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The negative ELBO of a batch: pixel NLL + tabular NLL + beta * KL."""
        mu, logvar = self.encode(x, c)
        raw = self.decode(self.reparameterize(mu, logvar, generator), c)
        logits, raw_tabular = self.split(raw)
        image, tabular = self.split(x)
        recon = self.pixel_nll(logits, image)  # (B,)
        if self.config.tabular_dim:
            recon = recon + reconstruction_nll(raw_tabular, tabular, self.tabular_index, self.log_sigma)
        return elbo_terms(recon, kl_per_dim(mu, logvar), beta)

    def pixel_nll(self, logits: Tensor, image: Tensor) -> Tensor:
        """(B,) -log p(image | logits), summed over pixels, under `pixel_likelihood`."""
        logits, image = logits.float(), image.float()  # the log-normaliser needs float32 under autocast
        if self.config.pixel_likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, image, reduction="none")
        elif self.config.pixel_likelihood == "continuous_bernoulli":
            nll = -ContinuousBernoulli(logits=logits).log_prob(image)
        else:
            scale = self.pixel_log_sigma.view(1, -1, 1, 1)
            z = (image - torch.sigmoid(logits)) * torch.exp(-scale)
            nll = 0.5 * z.square() + scale + 0.5 * math.log(2.0 * math.pi)
        return nll.flatten(1).sum(dim=1)

    def pixel_mean(self, logits: Tensor) -> Tensor:
        """The likelihood's mean pixel in [0, 1] (what a generated image shows)."""
        if self.config.pixel_likelihood == "continuous_bernoulli":
            return ContinuousBernoulli(logits=logits.float()).mean.clamp(0.0, 1.0).to(logits.dtype)
        return torch.sigmoid(logits)

    @torch.no_grad()
    def sample_output(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, D) raw -> (B, D) vector: mean pixels, tabular slots drawn from their likelihoods."""
        logits, raw_tabular = self.split(raw)
        tabular = None
        if self.config.tabular_dim:
            index, orders = self.tabular_index, (self.grouped_order, self.original_order)
            raw_t = raw_tabular.T.contiguous()  # (T, B): the draws run feature-major
            tabular = draw_feature_major(raw_t, index, self.log_sigma, *orders, generator).T
        return self.join(self.pixel_mean(logits), tabular)


def build_conv_model(config: ConvVAEConfig) -> ConvVAE:
    """A freshly initialised model; seed with `torch.manual_seed` beforehand for reproducible weights."""
    return ConvVAE(config)
