"""What every VAE in the pipeline is: the interface training, statistics, generation and evaluation call.

Models read and write the transform's flat data vector (B, D), whatever they do inside (the conv VAE reshapes its
image span to (B, C, H, W)), so the loop, the statistics job and the samplers never know which model they hold.
Faster paths a model may offer are optional capabilities, checked with `isinstance` against the runtime-checkable
protocols below (as samplers offer `affine_form`): `decode_feature_major` + `sample_feature_major` (generation
writes feature-major buffers) and `with_latent_affine` (a Gaussian sampler folded into the decoder's first layer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from vae_pipeline.models.losses import LossOutput


class ModelShape(Protocol):
    """A model's config: rebuilds it alone, stored in bundle.json beside the weights."""

    @property
    def architecture(self) -> str: ...

    data_dim: int
    latent_dim: int
    condition_dim: int

    def to_json(self) -> dict[str, Any]: ...


class VAE(nn.Module, ABC):
    """A (conditional) VAE over the data vector. Shapes: B rows, D data slots, L latents, C condition width.

    `forward(x, c, beta=...)` returns the loss (DistributedDataParallel synchronises gradients only through the
    wrapper's forward); `encode` gives q(z | x, c); `decode` the raw decoder output in the vector's layout;
    `sample_output` turns it into a data-space vector the inverse transform reads.
    """

    @abstractmethod
    def encode(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, D) data -> (mu, logvar), each (B, L)."""

    @abstractmethod
    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """(B, L) latents -> (B, D) raw decoder output."""

    @abstractmethod
    def forward(
        self, x: Tensor, c: Tensor | None = None, *, beta: float = 1.0, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The negative ELBO of a batch."""

    @abstractmethod
    def sample_output(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, D) raw output -> (B, D) data-space vector, every random part drawn from `generator`."""

    @torch.no_grad()
    def generate(self, z: Tensor, c: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(B, L) latents -> (B, D) data-space rows: `decode` then `sample_output`."""
        return self.sample_output(self.decode(z, c), generator)


@runtime_checkable
class FeatureMajorDecoder(Protocol):
    """Optional: decode and draw in the (D, B) layout generation writes (the MLP VAE's hot path)."""

    def decode_feature_major(self, z: Tensor, c: Tensor | None = None) -> Tensor: ...

    def sample_feature_major(
        self, raw_t: Tensor, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor: ...


@runtime_checkable
class LatentAffineFoldable(Protocol):
    """Optional: a copy whose decoder reads eps for z = shift + scale eps (a Gaussian sampler folded in)."""

    def with_latent_affine(self, shift: Tensor, scale: Tensor) -> VAE: ...
