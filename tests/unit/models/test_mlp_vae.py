"""MLPVAE: shapes, sampling, conditioning and config round trips on a tiny layout."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vae_pipeline.config import ModelConfig
from vae_pipeline.errors import ConfigError
from vae_pipeline.layout import Span
from vae_pipeline.models.mlp_vae import MLPVAE, LossOutput, MLPVAEConfig, build_model

# A continuous column (value + 2 modes), a categorical of 3, another of 2, and a null indicator masking the first.
SPANS = [
    Span("gaussian", 0, 1, "num", mask=8),
    Span("softmax", 1, 3, "num", mask=8),
    Span("softmax", 3, 6, "cat"),
    Span("softmax", 6, 8, "flag"),
    Span("bernoulli", 8, 9, "num_null"),
]
D, L, B = 9, 3, 5


def make_model(condition_dim: int = 0) -> MLPVAE:
    torch.manual_seed(0)
    return build_model(MLPVAEConfig(D, L, [16, 8], SPANS, condition_dim))


def test_shapes() -> None:
    model = make_model()
    x = torch.rand(B, D)

    mu, logvar = model.encode(x)
    raw, _, _ = model.reconstruct(x)
    out = model(x)

    assert mu.shape == logvar.shape == (B, L)
    assert model.decode(mu).shape == raw.shape == (B, D)
    assert isinstance(out, LossOutput)
    assert out.loss.shape == out.recon.shape == out.kl.shape == ()
    assert out.kl_per_dim.shape == (L,)
    assert model.log_sigma.shape == (1,) and isinstance(model.log_sigma, torch.nn.Parameter)


def test_loss_is_the_forward_call() -> None:
    model = make_model()
    x = torch.rand(B, D)
    a = model.loss(x, beta=0.5)
    torch.manual_seed(1)
    b = model.loss(x, beta=0.5)
    torch.manual_seed(1)
    c = model(x, beta=0.5)
    assert torch.equal(b.loss, c.loss)
    assert a.loss.requires_grad


def test_sample_output_is_one_hot_and_deterministic() -> None:
    model = make_model()
    raw = torch.randn(64, D, generator=torch.Generator().manual_seed(3)) * 3

    first = model.sample_output(raw, torch.Generator().manual_seed(7))
    second = model.sample_output(raw, torch.Generator().manual_seed(7))
    other = model.sample_output(raw, torch.Generator().manual_seed(8))

    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    for span in SPANS[1:4]:
        group = first[:, span.start : span.end]
        assert torch.all((group == 0) | (group == 1)) and torch.all(group.sum(dim=1) == 1)
    assert set(first[:, 8].tolist()) <= {0.0, 1.0}
    assert torch.all(first[:, 0].abs() <= 1.0)


def test_sample_output_draws_continuous_values_around_the_mean_with_the_learned_scale() -> None:
    model = make_model()
    with torch.no_grad():
        model.log_sigma.fill_(math.log(0.05))
    raw = torch.full((20_000, D), 0.3)
    out = model.sample_output(raw, torch.Generator().manual_seed(0))
    mean = math.tanh(0.3)
    assert abs(out[:, 0].mean().item() - mean) < 0.002
    assert abs(out[:, 0].std().item() - 0.05) < 0.002


def test_sample_output_follows_the_softmax() -> None:
    model = make_model()
    raw = torch.zeros(4000, D)
    raw[:, 3:6] = torch.log(torch.tensor([0.2, 0.3, 0.5]))
    raw[:, 8] = torch.logit(torch.tensor(0.25))

    out = model.sample_output(raw, torch.Generator().manual_seed(0))

    torch.testing.assert_close(out[:, 3:6].mean(0), torch.tensor([0.2, 0.3, 0.5]), atol=0.03, rtol=0)
    assert out[:, 8].mean().item() == pytest.approx(0.25, abs=0.03)


def test_reparameterisation_is_deterministic_given_a_generator() -> None:
    model = make_model()
    x = torch.rand(B, D)
    a = model(x, generator=torch.Generator().manual_seed(5))
    b = model(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss)


def test_conditional_model_runs_and_checks_its_condition() -> None:
    model = make_model(condition_dim=2)
    x = torch.rand(B, D)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).float()

    out = model(x, c)
    out.loss.backward()
    generated = model.generate(torch.randn(B, L), c, generator=torch.Generator().manual_seed(0))

    assert torch.isfinite(out.loss)
    assert generated.shape == (B, D)
    with pytest.raises(ValueError, match=r"needs c of shape \(B, 2\)"):
        model(x)
    with pytest.raises(ValueError, match="unconditional"):
        make_model()(x, c)


def test_config_json_round_trip_rebuilds_the_same_model() -> None:
    config = MLPVAEConfig(D, L, [16, 8], SPANS, condition_dim=2)
    text = json.dumps(config.to_json())
    restored = MLPVAEConfig.from_json(json.loads(text))
    assert restored == config

    model = make_model(condition_dim=2)
    rebuilt = build_model(restored)
    rebuilt.load_state_dict(model.state_dict())
    x, c = torch.rand(B, D), torch.eye(2)[torch.tensor([0, 1, 0, 1, 1])]
    torch.testing.assert_close(model.encode(x, c), rebuilt.encode(x, c))


def test_state_dict_holds_weights_not_span_indexes() -> None:
    assert all(not key.startswith("span_index") for key in make_model().state_dict())


def test_from_model_config() -> None:
    config = MLPVAEConfig.from_model_config(ModelConfig(latent_dim=4, hidden_dims=[32]), SPANS, data_dim=D)
    assert (config.latent_dim, config.hidden_dims, config.condition_dim) == (4, [32], 0)


def test_model_without_gaussian_spans_has_no_sigma_parameter() -> None:
    model = build_model(MLPVAEConfig(3, 2, [4], [Span("softmax", 0, 3, "cat")]))
    assert "log_sigma" not in dict(model.named_parameters())
    model(torch.eye(3)).loss.backward()


@pytest.mark.parametrize("kwargs", [{"latent_dim": 0}, {"hidden_dims": []}, {"hidden_dims": [8, 0]}])
def test_bad_config_is_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"data_dim": D, "latent_dim": L, "hidden_dims": [8], "spans": SPANS, **kwargs}
    with pytest.raises(ConfigError):
        MLPVAEConfig(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the generation hot path


def test_feature_major_decode_is_the_transposed_decode() -> None:
    for condition_dim in (0, 2):
        model = make_model(condition_dim)
        z = torch.randn(7, L, generator=torch.Generator().manual_seed(0))
        c = torch.eye(2)[torch.tensor([0, 1, 1, 0, 1, 0, 0])] if condition_dim else None
        raw_t = model.decode_feature_major(z, c)
        assert raw_t.shape == (D, 7) and raw_t.is_contiguous()
        torch.testing.assert_close(raw_t, model.decode(z, c).T)


def test_sample_feature_major_writes_into_a_buffer_slice() -> None:
    model = make_model()
    raw_t = torch.randn(D, 50, generator=torch.Generator().manual_seed(1)) * 3
    expected = model.sample_feature_major(raw_t, torch.Generator().manual_seed(2))
    buffer = torch.full((D, 120), -7.0)
    returned = model.sample_feature_major(raw_t, torch.Generator().manual_seed(2), out=buffer[:, 30:80])
    assert returned.data_ptr() == buffer[:, 30:80].data_ptr()
    torch.testing.assert_close(buffer[:, 30:80], expected, rtol=0, atol=0)
    assert torch.all(buffer[:, :30] == -7.0) and torch.all(buffer[:, 80:] == -7.0)
    torch.testing.assert_close(model.sample_output(raw_t.T, torch.Generator().manual_seed(2)), expected.T)


def test_softmax_draw_never_picks_a_slot_of_zero_weight() -> None:
    model = make_model()
    raw = torch.zeros(20_000, D)
    raw[:, 3:6] = torch.tensor([-1e4, 0.0, -1e4])  # slots 3 and 5 have weight exp(-1e4) = 0 in float32
    raw[:, 6:8] = torch.tensor([0.0, -200.0])
    out = model.sample_output(raw, torch.Generator().manual_seed(0))
    assert torch.all(out[:, 4] == 1) and torch.all(out[:, 6] == 1)


def test_softmax_draw_matches_the_probabilities_of_a_wide_group() -> None:
    spans = [Span("softmax", 0, 7, "wide")]
    model = build_model(MLPVAEConfig(7, 2, [4], spans))
    probs = torch.tensor([0.05, 0.3, 0.0, 0.15, 0.2, 0.1, 0.2])
    raw = torch.log(probs).expand(50_000, 7)
    drawn = model.sample_output(raw, torch.Generator().manual_seed(0)).mean(0)
    torch.testing.assert_close(drawn, probs, atol=0.008, rtol=0)  # about 4 standard errors


def test_latent_affine_is_folded_into_the_first_layer() -> None:
    for condition_dim in (0, 2):
        model = make_model(condition_dim)
        gen = torch.Generator().manual_seed(3)
        shift, scale = torch.randn(L, generator=gen), torch.randn(L, L, generator=gen)
        eps = torch.randn(11, L, generator=gen)
        c = torch.eye(2)[torch.randint(0, 2, (11,), generator=gen)] if condition_dim else None
        fused = model.with_latent_affine(shift, scale)
        expected = model.decode(shift + eps @ scale.T, c)
        torch.testing.assert_close(fused.decode(eps, c), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused.decode_feature_major(eps, c), expected.T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.decode(eps, c), make_model(condition_dim).decode(eps, c))  # untouched
    with pytest.raises(ValueError, match="shift must be"):
        model.with_latent_affine(torch.zeros(L + 1), torch.eye(L))
