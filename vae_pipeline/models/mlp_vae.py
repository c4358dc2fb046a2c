"""A (conditional) VAE with MLP encoder and decoder over the tabular data vector.

One config, two small sub-modules and one model class (the shape of nanoGPT's `model.py`). Shapes: B rows,
D = data_dim, L = latent_dim, C = condition_dim (a one-hot label for a CVAE, 0 otherwise).

Training goes through `forward`, which returns the loss: DistributedDataParallel synchronises gradients only for
a forward called through its wrapper, so the training loop calls `model(x, c, beta=beta)` whether or not the model
is wrapped. `loss` is the same call under a clearer name for unwrapped use; `reconstruct` gives the raw outputs.

No device choice and no file IO here: callers move the model and save `config.to_json()` with the state dict.
Seeding is the caller's: `torch.manual_seed(seed)` before `build_model`, a `torch.Generator` for every draw.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vae_pipeline.config import ModelConfig
from vae_pipeline.errors import ConfigError
from vae_pipeline.layout import Span
from vae_pipeline.models.base import VAE
from vae_pipeline.models.losses import LossOutput, SpanIndex, elbo_terms, kl_per_dim, reconstruction_nll
from vae_pipeline.models.span_draws import draw_feature_major, grouped_slots

__all__ = ["MLPVAE", "LossOutput", "MLPVAEConfig", "build_model"]

LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0  # keeps exp(logvar) finite and the KL gradient bounded
LOG_SIGMA_INIT = math.log(0.1)  # gaussian slots hold values in [-1, 1]; start with a tight, learnable std


@dataclass
class MLPVAEConfig:
    """Everything needed to rebuild the model; stored next to its weights."""

    architecture: ClassVar[str] = "mlp"

    data_dim: int
    latent_dim: int
    hidden_dims: list[int]
    spans: list[Span]
    condition_dim: int = 0

    def __post_init__(self) -> None:
        if self.data_dim < 1 or self.latent_dim < 1 or self.condition_dim < 0:
            raise ConfigError(
                f"MLPVAEConfig needs data_dim >= 1, latent_dim >= 1, condition_dim >= 0; got "
                f"{self.data_dim}, {self.latent_dim}, {self.condition_dim}"
            )
        if not self.hidden_dims or any(width < 1 for width in self.hidden_dims):
            raise ConfigError(f"hidden_dims needs at least one positive width, e.g. [256, 256]; got {self.hidden_dims}")

    @classmethod
    def from_model_config(
        cls, model: ModelConfig, spans: list[Span], data_dim: int, condition_dim: int = 0
    ) -> MLPVAEConfig:
        """The model config of a pipeline run, given the transform's layout and the label's one-hot width."""
        return cls(data_dim, model.latent_dim, list(model.hidden_dims), list(spans), condition_dim)

    def to_json(self) -> dict[str, Any]:
        return {
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "spans": [span.to_json() for span in self.spans],
            "condition_dim": self.condition_dim,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MLPVAEConfig:
        fields = dict(data)
        fields["spans"] = [Span.from_json(span) for span in fields["spans"]]
        fields["hidden_dims"] = list(fields["hidden_dims"])
        return cls(**fields)


def mlp(in_dim: int, hidden_dims: list[int]) -> nn.Sequential:
    """Linear + ReLU blocks; the caller adds the output head."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z | x, c) = N(mu, diag(exp(logvar)))."""

    def __init__(self, config: MLPVAEConfig) -> None:
        super().__init__()
        self.body = mlp(config.data_dim + config.condition_dim, config.hidden_dims)
        self.head = nn.Linear(config.hidden_dims[-1], 2 * config.latent_dim)

    def forward(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(xc)).chunk(2, dim=-1)  # (B, L), (B, L)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class Decoder(nn.Module):
    """p(x | z, c): the raw (B, D) output that the span likelihoods read."""

    def __init__(self, config: MLPVAEConfig) -> None:
        super().__init__()
        self.body = mlp(config.latent_dim + config.condition_dim, list(reversed(config.hidden_dims)))
        self.head = nn.Linear(config.hidden_dims[0], config.data_dim)

    def forward(self, zc: Tensor) -> Tensor:
        return self.head(self.body(zc))  # (B, D)


class MLPVAE(VAE):
    """A VAE (or CVAE when `condition_dim > 0`) whose likelihood follows the data vector's span layout."""

    log_sigma: Tensor
    grouped_order: Tensor
    original_order: Tensor

    def __init__(self, config: MLPVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.span_index = SpanIndex(config.spans, config.data_dim)
        # Generation works on the output rows grouped by likelihood: gaussian slots, softmax groups by width (as
        # `softmax_groups` lists them), null indicators, then any slots outside every span.
        grouped = grouped_slots(self.span_index)
        self.register_buffer("grouped_order", grouped, persistent=False)
        self.register_buffer("original_order", torch.argsort(self.grouped_order), persistent=False)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        sigma = torch.full((self.span_index.n_gaussian,), LOG_SIGMA_INIT)  # (G,)
        if self.span_index.n_gaussian:
            self.log_sigma = nn.Parameter(sigma)
        else:
            # A parameter that no loss touches would stall DistributedDataParallel's gradient reduction.
            self.register_buffer("log_sigma", sigma)

    def _with_condition(self, t: Tensor, c: Tensor | None) -> Tensor:
        if self.config.condition_dim == 0:
            if c is not None:
                raise ValueError("this model is unconditional (condition_dim=0); call it without c")
            return t
        if c is None or c.shape != (t.shape[0], self.config.condition_dim):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"this model needs c of shape (B, {self.config.condition_dim}); got {got}")
        return torch.cat([t, c.to(t.dtype)], dim=1)  # (B, * + C)

    def encode(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, D) data -> (mu, logvar), each (B, L)."""
        return self.encoder(self._with_condition(x, c))

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """(B, L) latents -> (B, D) raw decoder output (pre-tanh means and logits)."""
        return self.decoder(self._with_condition(z, c))

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014, eq. 10 with one sample)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (B, L)
        return mu + torch.exp(0.5 * logvar) * eps

    def reconstruct(
        self, x: Tensor, c: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(raw (B, D), mu (B, L), logvar (B, L)) for one posterior sample per row."""
        mu, logvar = self.encode(x, c)
        raw = self.decode(self.reparameterize(mu, logvar, generator), c)
        return raw, mu, logvar

    def forward(
        self, x: Tensor, c: Tensor | None = None, *, beta: float = 1.0, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The negative ELBO of a batch; the entry point for training, wrapped in DDP or not."""
        raw, mu, logvar = self.reconstruct(x, c, generator)
        recon = reconstruction_nll(raw, x, self.span_index, self.log_sigma)  # (B,)
        return elbo_terms(recon, kl_per_dim(mu, logvar), beta)

    def loss(self, x: Tensor, c: Tensor | None = None, beta: float = 1.0) -> LossOutput:
        """Same as calling the model; use the call itself when the model may be wrapped in DDP."""
        result: LossOutput = self(x, c, beta=beta)
        return result

    def decode_feature_major(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """`decode`, laid out feature-major: (B, L) latents -> (D, B) contiguous raw output.

        Generation reads the output one span or column at a time; in this layout each is a contiguous row, so
        every step after the decoder is a contiguous pass (row-major, a column's values lie D floats apart). The
        head computes W hᵀ + b instead of h Wᵀ + b: the same weights and the same cost.
        """
        hidden = self.decoder.body(self._with_condition(z, c))  # (B, H)
        head = self.decoder.head
        return torch.addmm(head.bias.unsqueeze(1), head.weight, hidden.T)  # (D, B)

    @torch.no_grad()
    def with_latent_affine(self, shift: Tensor, scale: Tensor) -> MLPVAE:
        """A copy whose decoder reads ε, for latents z = shift + scale ε: the map folded into its first layer.

        W z + b = (W scale) ε + (W shift + b), so a Gaussian latent costs generation its normal draws alone, not a
        (B, L) x (L, L) product per batch. Folded in float64: the copy decodes ε as `decode` decodes z, up to float32
        rounding. Shapes: shift (L,), scale (L, L).
        """
        latent = self.config.latent_dim
        if shift.shape != (latent,) or scale.shape != (latent, latent):
            raise ValueError(
                f"shift must be ({latent},) and scale ({latent}, {latent}); got {shift.shape}, {scale.shape}"
            )
        fused = copy.deepcopy(self)
        first = fused.decoder.body[0]
        assert isinstance(first, nn.Linear)
        weight = first.weight.double()[:, :latent]  # (H, L); condition columns stay as they are
        first.bias.copy_(first.bias.double() + weight @ shift.double())
        first.weight[:, :latent] = weight @ scale.double()
        return fused

    @torch.no_grad()
    def sample_output(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Turn a (B, D) decoder output into a data-space vector the inverse transform accepts.

        Every part is a draw from the likelihood the model was trained with: Gaussian slots N(tanh(raw), sigma²)
        with the learned per-column sigma (the mean alone would narrow every continuous column to the latent's
        spread), one-hot groups a one-hot draw from their softmax, null indicators a draw from their sigmoid.
        Masked spans are drawn like the others; the inverse transform reads the null slot. Slots outside every span
        are copied. Deterministic given the generator (on raw's device). Returns the transpose of
        `sample_feature_major(raw.T)`, a view.
        """
        return self.sample_feature_major(raw.T, generator).T

    @torch.no_grad()
    def sample_feature_major(
        self, raw_t: Tensor, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        """`sample_output` on the feature-major layout: (D, B) raw output -> (D, B) data-space vector.

        Args:
            raw_t: (D, B) decoder output, e.g. from `decode_feature_major`.
            generator: every draw comes from it.
            out: (D, B) tensor to write into, e.g. a slice of a larger buffer; a new tensor when None.
        """
        return draw_feature_major(
            raw_t, self.span_index, self.log_sigma, self.grouped_order, self.original_order, generator, out
        )

    @torch.no_grad()
    def generate(self, z: Tensor, c: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(B, L) latents -> (B, D) data-space rows: `decode` then `sample_output`."""
        return self.sample_feature_major(self.decode_feature_major(z, c), generator).T


def build_model(config: MLPVAEConfig) -> MLPVAE:
    """A freshly initialised model; seed with `torch.manual_seed` beforehand for reproducible weights."""
    return MLPVAE(config)
