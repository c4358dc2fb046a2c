"""Losses of a VAE on a tabular data vector, as pure functions over the vector's layout (a list of `Span`).

The ELBO (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 3):

    L(θ, φ; x) = -KL(q_φ(z|x) || p(z)) + E_q[log p_θ(x|z)]

We minimise its negative, per row: reconstruction NLL (one sample of z) + β · KL (β = 1 is the plain ELBO; Higgins
et al. 2017 for β ≠ 1). The likelihood p_θ(x|z) factorises over the spans of the layout:

    gaussian   N(x; tanh(raw), σ²), σ = exp(log_sigma) learned per column
    softmax    Categorical(x; softmax(raw_group))       (cross-entropy against the one-hot group)
    bernoulli  Bernoulli(x; sigmoid(raw))                (BCE with logits)

A span with `mask = j` is left out of the likelihood on rows where the null indicator x[:, j] is 1: the slice
carries no information there (the transform writes zeros into it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_pipeline.layout import Span

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class LossOutput:
    """The terms of the negative ELBO for one batch; all are tensors attached to the graph."""

    loss: Tensor  # () mean(recon) + beta * mean(sum_l KL_l)
    recon: Tensor  # () mean reconstruction NLL per row
    kl: Tensor  # () mean KL per row, summed over latent dimensions
    kl_per_dim: Tensor  # (L,) KL per latent dimension, averaged over rows


class SpanIndex(nn.Module):
    """Index tensors for each likelihood kind, built once from the spans so the losses gather instead of looping.

    Held as non-persistent buffers: they follow `model.to(device)` but never enter a checkpoint (the spans do,
    through the model config). Softmax groups are batched by width, one gather per distinct width.
    Mask columns are `-1` where a span has no mask.
    """

    def __init__(self, spans: Sequence[Span], data_dim: int) -> None:
        super().__init__()
        _check_spans(spans, data_dim)
        self.data_dim = data_dim
        gaussian = [s for s in spans if s.kind == "gaussian"]
        bernoulli = [s for s in spans if s.kind == "bernoulli"]
        self.n_gaussian = len(gaussian)
        self._register("gaussian_idx", [s.start for s in gaussian])  # (G,)
        self._register("gaussian_mask", [_mask(s) for s in gaussian])  # (G,)
        self._register("bernoulli_idx", [s.start for s in bernoulli])  # (N,)
        self._register("bernoulli_mask", [_mask(s) for s in bernoulli])  # (N,)
        self.softmax_widths = sorted({s.width for s in spans if s.kind == "softmax"})
        for width in self.softmax_widths:
            groups = [s for s in spans if s.kind == "softmax" and s.width == width]
            self._register(f"softmax_idx_{width}", [list(range(s.start, s.end)) for s in groups])  # (K, w)
            self._register(f"softmax_mask_{width}", [_mask(s) for s in groups])  # (K,)

    def _register(self, name: str, values: list[int] | list[list[int]]) -> None:
        self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)

    def index(self, name: str) -> Tensor:
        return self.get_buffer(name)

    def softmax_groups(self) -> list[tuple[Tensor, Tensor]]:
        """(index (K, w), mask (K,)) for each distinct group width w, in increasing width."""
        return [(self.index(f"softmax_idx_{w}"), self.index(f"softmax_mask_{w}")) for w in self.softmax_widths]


def _mask(span: Span) -> int:
    return -1 if span.mask is None else span.mask


def _check_spans(spans: Sequence[Span], data_dim: int) -> None:
    covered: set[int] = set()
    for span in spans:
        if not 0 <= span.start < span.end <= data_dim:
            raise ValueError(
                f"span of column '{span.column}' is [{span.start}, {span.end}); it must lie in [0, {data_dim})"
            )
        if span.kind in ("gaussian", "bernoulli") and span.width != 1:
            raise ValueError(f"{span.kind} span of column '{span.column}' has width {span.width}; it must be 1")
        if span.mask is not None and not 0 <= span.mask < data_dim:
            raise ValueError(f"span of column '{span.column}' has mask {span.mask}, outside [0, {data_dim})")
        slots = set(range(span.start, span.end))
        if covered & slots:
            raise ValueError(f"span of column '{span.column}' overlaps another span at slots {sorted(covered & slots)}")
        covered |= slots


def span_weights(x: Tensor, mask: Tensor) -> Tensor:
    """(B, K) weight 1 where a span counts, 0 where its column's null slot is set; `mask` is (K,) with -1 = none."""
    null = x[:, mask.clamp(min=0)] > 0.5  # (B, K) null slots are exactly 0 or 1
    return (~(null & (mask >= 0))).to(x.dtype)


def gaussian_nll(raw: Tensor, x: Tensor, index: SpanIndex, log_sigma: Tensor) -> Tensor:
    """(B,) sum over gaussian spans of -log N(x; tanh(raw), exp(log_sigma)^2)."""
    idx = index.index("gaussian_idx")
    mean = torch.tanh(raw[:, idx])  # (B, G)
    z = (x[:, idx] - mean) * torch.exp(-log_sigma)  # (B, G)
    nll = 0.5 * z.square() + log_sigma + _HALF_LOG_2PI  # (B, G)
    return (nll * span_weights(x, index.index("gaussian_mask"))).sum(dim=1)


def softmax_nll(raw: Tensor, x: Tensor, index: SpanIndex) -> Tensor:
    """(B,) sum over one-hot groups of the cross-entropy -sum_k x_k log softmax(raw)_k."""
    total = raw.new_zeros(raw.shape[0])  # (B,)
    for idx, mask in index.softmax_groups():
        log_p = F.log_softmax(raw[:, idx], dim=-1)  # (B, K, w)
        ce = -(x[:, idx] * log_p).sum(dim=-1)  # (B, K)
        total = total + (ce * span_weights(x, mask)).sum(dim=1)
    return total


def bernoulli_nll(raw: Tensor, x: Tensor, index: SpanIndex) -> Tensor:
    """(B,) sum over bernoulli spans of the binary cross-entropy with logits."""
    idx = index.index("bernoulli_idx")
    bce = F.binary_cross_entropy_with_logits(raw[:, idx], x[:, idx], reduction="none")  # (B, N)
    return (bce * span_weights(x, index.index("bernoulli_mask"))).sum(dim=1)


def reconstruction_nll(raw: Tensor, x: Tensor, spans: Sequence[Span] | SpanIndex, log_sigma: Tensor) -> Tensor:
    """Negative log-likelihood of each row of `x` under the decoder output `raw`.

    Args:
        raw: (B, D) decoder output: pre-tanh means, logits of one-hot groups and of null indicators.
        x: (B, D) the transformed data.
        spans: the layout of the vector, or a `SpanIndex` built from it (built here if a list is given).
        log_sigma: (G,) log standard deviation of each gaussian span, in the order the spans list them.

    Returns:
        (B,) the NLL of each row, masked spans left out.
    """
    if raw.shape != x.shape or raw.dim() != 2:
        raise ValueError(f"raw and x must both be (B, D); got {tuple(raw.shape)} and {tuple(x.shape)}")
    index = spans if isinstance(spans, SpanIndex) else SpanIndex(spans, x.shape[1]).to(x.device)
    if x.shape[1] != index.data_dim:
        raise ValueError(f"x has {x.shape[1]} columns but the span layout describes {index.data_dim}")
    if log_sigma.shape != (index.n_gaussian,):
        raise ValueError(
            f"log_sigma must be ({index.n_gaussian},), one per gaussian span; got {tuple(log_sigma.shape)}"
        )
    return gaussian_nll(raw, x, index, log_sigma) + softmax_nll(raw, x, index) + bernoulli_nll(raw, x, index)


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """(B, L) KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension (Kingma & Welling 2014, appendix B)."""
    return 0.5 * (mu.square() + torch.exp(logvar) - 1.0 - logvar)


def elbo_terms(recon_nll: Tensor, kl: Tensor, beta: float = 1.0) -> LossOutput:
    """Combine per-row terms into the batch loss: mean(recon) + beta * mean(sum_l KL_l).

    Args:
        recon_nll: (B,) reconstruction NLL per row.
        kl: (B, L) KL per row and latent dimension.
        beta: weight of the KL term.
    """
    recon = recon_nll.mean()  # ()
    kl_row = kl.sum(dim=1)  # (B,)
    kl_mean = kl_row.mean()  # ()
    return LossOutput(loss=recon + beta * kl_mean, recon=recon, kl=kl_mean, kl_per_dim=kl.mean(dim=0))
