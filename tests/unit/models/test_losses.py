"""Losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from vae_pipeline.layout import Span
from vae_pipeline.models.losses import SpanIndex, elbo_terms, kl_per_dim, reconstruction_nll

# One continuous value (slot 0), a 3-way one-hot group (slots 1-3), a null indicator (slot 4) masking both.
SPANS = [
    Span("gaussian", 0, 1, "a", mask=4),
    Span("softmax", 1, 4, "b", mask=4),
    Span("bernoulli", 4, 5, "a_null"),
]
RAW = torch.tensor([[0.5, 1.0, 2.0, 0.0, -1.0], [0.3, 0.0, 0.0, 0.0, 2.0]])
X = torch.tensor([[0.2, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])  # row 1 is null: masked
LOG_SIGMA = torch.tensor([math.log(0.5)])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_reconstruction_nll_matches_hand_computation() -> None:
    z = (0.2 - math.tanh(0.5)) / 0.5
    gaussian = 0.5 * z**2 + math.log(0.5) + 0.5 * math.log(2 * math.pi)
    softmax = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.0)))
    expected = torch.tensor([gaussian + softmax + softplus(-1.0), softplus(-2.0)])  # BCE(l, 0) = softplus(l)

    nll = reconstruction_nll(RAW, X, SPANS, LOG_SIGMA)

    assert nll.shape == (2,)
    torch.testing.assert_close(nll, expected)


def test_span_index_gives_the_same_value_as_the_span_list() -> None:
    index = SpanIndex(SPANS, data_dim=5)
    torch.testing.assert_close(
        reconstruction_nll(RAW, X, index, LOG_SIGMA), reconstruction_nll(RAW, X, SPANS, LOG_SIGMA)
    )


def test_masked_spans_contribute_nothing_and_get_no_gradient() -> None:
    raw = RAW.clone().requires_grad_(True)
    x_other = X.clone()
    x_other[1, :4] = torch.tensor([0.9, 1.0, 0.0, 0.0])  # garbage in the masked slots of the null row

    nll = reconstruction_nll(raw, x_other, SPANS, LOG_SIGMA)
    nll[1].backward()

    assert nll[1].item() == pytest.approx(softplus(-2.0))
    assert torch.all(raw.grad[1, :4] == 0)  # type: ignore[index]


def test_equal_width_groups_are_scored_independently() -> None:
    spans = [Span("softmax", 0, 2, "p"), Span("softmax", 2, 4, "q"), Span("softmax", 4, 7, "r")]
    raw = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[1.0, 0, 0, 1, 0, 0, 1], [0, 1, 1, 0, 1, 0, 0], [1, 0, 1, 0, 0, 1, 0]])
    expected = sum(
        torch.nn.functional.cross_entropy(raw[:, s.start : s.end], x[:, s.start : s.end].argmax(1), reduction="none")
        for s in spans
    )
    torch.testing.assert_close(reconstruction_nll(raw, x, spans, torch.zeros(0)), expected)


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([Span("gaussian", 0, 2, "a")], "width 2"),
        ([Span("softmax", 3, 6, "a")], "must lie in"),
        ([Span("softmax", 0, 3, "a"), Span("bernoulli", 2, 3, "b")], "overlaps"),
    ],
)
def test_bad_layouts_are_refused(spans: list[Span], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpanIndex(spans, data_dim=5)


def test_log_sigma_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="one per gaussian span"):
        reconstruction_nll(RAW, X, SPANS, torch.zeros(2))


def test_kl_per_dim_matches_hand_computation() -> None:
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, math.log(0.5)]])
    expected = torch.tensor(
        [
            [0.0, 0.5 * (1.0 + 2.0 - 1.0 - math.log(2.0))],
            [0.5 * 4.0, 0.5 * (1.0 + 0.5 - 1.0 - math.log(0.5))],
        ]
    )
    torch.testing.assert_close(kl_per_dim(mu, logvar), expected)


def test_elbo_terms_combine_means() -> None:
    recon = torch.tensor([1.0, 3.0])
    kl = torch.tensor([[0.5, 1.5], [1.0, 1.0]])

    out = elbo_terms(recon, kl, beta=0.5)

    assert out.recon.item() == pytest.approx(2.0)
    assert out.kl.item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(2.0 + 0.5 * 2.0)
    torch.testing.assert_close(out.kl_per_dim, torch.tensor([0.75, 1.25]))
