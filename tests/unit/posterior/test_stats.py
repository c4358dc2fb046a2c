"""PosteriorStats: streaming and merging in any order equal the one-shot computation; the reservoir is exact."""

from __future__ import annotations

import itertools
from functools import reduce

import numpy as np
import pytest

from vae_pipeline.errors import DataError
from vae_pipeline.posterior.stats import PosteriorStats

ROWS, DIM, CLASSES, RESERVOIR = 1000, 4, 3, 50
BATCH_SIZES = [1, 99, 250, 3, 400, 200, 47]  # 7 uneven batches, 1000 rows


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(DIM, DIM))
    keys = rng.integers(0, 2**20, size=ROWS, dtype=np.uint64)  # a small key range, so some keys tie
    return {
        "mu": rng.normal(size=(ROWS, DIM)) @ mix + 5.0,
        "logvar": rng.normal(-1.0, 0.5, size=(ROWS, DIM)),
        "keys": keys,
        "labels": rng.integers(0, CLASSES, size=ROWS),
    }


def _batch_stats(data: dict[str, np.ndarray]) -> list[PosteriorStats]:
    bounds = np.cumsum([0, *BATCH_SIZES])
    parts = []
    for start, end in itertools.pairwise(bounds):
        part = PosteriorStats.empty(DIM, CLASSES, RESERVOIR)
        part.update(*(data[k][start:end] for k in ("mu", "logvar", "keys", "labels")))
        parts.append(part)
    return parts


def _tree(parts: list[PosteriorStats]) -> PosteriorStats:
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return _tree(parts[:middle]).merge(_tree(parts[middle:]))


def _merge_orders(data: dict[str, np.ndarray]) -> dict[str, PosteriorStats]:
    parts = _batch_stats(data)
    streamed = PosteriorStats.empty(DIM, CLASSES, RESERVOIR)
    for size, start in zip(BATCH_SIZES, np.cumsum([0, *BATCH_SIZES])[:-1], strict=True):
        streamed.update(*(data[k][start : start + size] for k in ("mu", "logvar", "keys", "labels")))
    shuffled = [parts[i] for i in np.random.default_rng(1).permutation(len(parts))]
    return {
        "streamed": streamed,
        "left_fold": reduce(PosteriorStats.merge, parts),
        "right_fold": reduce(lambda acc, p: p.merge(acc), parts[::-1]),
        "reversed": reduce(PosteriorStats.merge, parts[::-1]),
        "tree": _tree(parts),
        "shuffled_tree": _tree(shuffled),
        "with_empty": PosteriorStats.empty(DIM, CLASSES, RESERVOIR).merge(_tree(parts)),
    }


def test_streaming_and_merging_equal_one_shot(data: dict[str, np.ndarray]) -> None:
    mu, logvar, labels = data["mu"], data["logvar"], data["labels"]
    expected_cov = np.cov(mu.T, bias=True) + np.diag(np.exp(logvar).mean(axis=0))
    expected_kl = (0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)).mean(axis=0)
    for name, stats in _merge_orders(data).items():
        assert stats.n == ROWS, name
        np.testing.assert_allclose(stats.mean(), mu.mean(axis=0), rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(stats.covariance(), expected_cov, rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(stats.kl_per_dim(), expected_kl, rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_array_equal(stats.class_counts(), np.bincount(labels, minlength=CLASSES))
        for c in range(CLASSES):
            rows = labels == c
            cov_c = np.cov(mu[rows].T, bias=True) + np.diag(np.exp(logvar[rows]).mean(axis=0))
            np.testing.assert_allclose(stats.class_mean(c), mu[rows].mean(axis=0), rtol=0, atol=1e-10)
            np.testing.assert_allclose(stats.class_covariance(c), cov_c, rtol=0, atol=1e-10)


def test_reservoir_is_bottom_k_and_identical_across_orders(data: dict[str, np.ndarray]) -> None:
    orders = _merge_orders(data)
    # Reference: sort all rows by (key, μ columns, ...) and take the first RESERVOIR.
    order = np.lexsort((data["labels"], *data["logvar"].T[::-1], *data["mu"].T[::-1], data["keys"]))[:RESERVOIR]
    for name, stats in orders.items():
        np.testing.assert_array_equal(stats.reservoir_keys, data["keys"][order], err_msg=name)
        np.testing.assert_array_equal(stats.reservoir_mu, data["mu"][order], err_msg=name)
        np.testing.assert_array_equal(stats.reservoir_logvar, data["logvar"][order], err_msg=name)
        np.testing.assert_array_equal(stats.reservoir_labels, data["labels"][order], err_msg=name)


def test_tied_keys_break_by_mu_in_any_order() -> None:
    mu = np.array([[3.0], [1.0], [2.0], [0.5]])
    keys = np.array([7, 7, 7, 9], dtype=np.uint64)
    results = []
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        a, b = PosteriorStats.empty(1, 0, 2), PosteriorStats.empty(1, 0, 2)
        a.update(mu[perm[:2]], np.zeros((2, 1)), keys[perm[:2]], None)
        b.update(mu[perm[2:]], np.zeros((2, 1)), keys[perm[2:]], None)
        results.append(b.merge(a).reservoir_mu.ravel().tolist())
    assert results == [[1.0, 2.0]] * 3


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_five_rows_hand_computed(batch: int) -> None:
    """μ = 1..5, log σ² = 0: mean 3, Var(μ) 2, covariance 2 + 1, KL mean 0.5 · mean(μ²) = 5.5."""
    mu = np.arange(1.0, 6.0)[:, None]
    stats = PosteriorStats.empty(1, 2, 3)
    for start in range(0, 5, batch):
        rows = slice(start, start + batch)
        stats.update(
            mu[rows],
            np.zeros((5, 1))[rows],
            np.arange(5, 0, -1, dtype=np.uint64)[rows],
            np.array([0, 0, 1, 1, 1])[rows],
        )
    assert stats.mean() == pytest.approx([3.0])
    assert stats.covariance() == pytest.approx(np.array([[3.0]]))
    assert stats.kl_per_dim() == pytest.approx([5.5])
    assert stats.class_counts().tolist() == [2, 3]
    assert stats.class_mean(1) == pytest.approx([4.0])
    assert stats.class_covariance(1) == pytest.approx(np.array([[2 / 3 + 1]]))
    assert stats.reservoir_mu.ravel().tolist() == [5.0, 4.0, 3.0]  # keys 1, 2, 3
    assert stats.active_units() == 1


def test_active_units_threshold() -> None:
    rng = np.random.default_rng(0)
    mu = np.column_stack([rng.normal(0, 1, 500), rng.normal(0, 0.05, 500)])  # Var 1 and 0.0025
    stats = PosteriorStats.empty(2, 0, 10)
    stats.update(mu, np.zeros_like(mu), rng.integers(0, 2**63, 500, dtype=np.uint64), None)
    assert stats.active_mask().tolist() == [True, False]
    assert stats.active_units() == 1


def test_without_labels_reservoir_labels_are_minus_one() -> None:
    stats = PosteriorStats.empty(2, 0, 5)
    stats.update(np.ones((3, 2)), np.zeros((3, 2)), np.arange(3, dtype=np.uint64), None)
    assert stats.reservoir_labels.tolist() == [-1, -1, -1]
    assert stats.class_counts().shape == (0,)


def test_bytes_round_trip(data: dict[str, np.ndarray]) -> None:
    stats = _tree(_batch_stats(data))
    back = PosteriorStats.from_bytes(stats.to_bytes())
    assert (back.n, back.latent_dim, back.n_classes, back.reservoir_size) == (ROWS, DIM, CLASSES, RESERVOIR)
    for name in ("sum_mu", "sum_mu_outer", "sum_var", "sum_kl", "class_n", "class_sum_mu_outer", "reservoir_keys"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
        assert getattr(back, name).dtype == getattr(stats, name).dtype
    np.testing.assert_array_equal(back.reservoir_mu, stats.reservoir_mu)
    empty = PosteriorStats.from_bytes(PosteriorStats.empty(3, 0, 10).to_bytes())
    assert empty.n == 0 and empty.reservoir_mu.shape == (0, 3)
    assert stats.to_bytes() == back.to_bytes()


def test_from_bytes_rejects_other_content() -> None:
    with pytest.raises(DataError, match="PosteriorStats"):
        PosteriorStats.from_bytes(b"not safetensors at all")


@pytest.mark.parametrize(
    ("mu", "logvar", "keys", "labels", "match"),
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2, np.uint64), None, "shape"),
        (np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2, np.int64), None, "uint64"),
        (np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2, np.uint64), np.array([0, 2]), r"\[0, 2\)"),
        (np.full((2, 2), np.nan), np.zeros((2, 2)), np.zeros(2, np.uint64), None, "NaN"),
    ],
)
def test_update_rejects_bad_input(mu, logvar, keys, labels, match: str) -> None:
    with pytest.raises(DataError, match=match):
        PosteriorStats.empty(2, 2, 5).update(mu, logvar, keys, labels)


def test_merge_rejects_different_shapes() -> None:
    with pytest.raises(DataError, match="same config"):
        PosteriorStats.empty(2, 0, 5).merge(PosteriorStats.empty(3, 0, 5))


def test_moments_of_no_rows_raise() -> None:
    with pytest.raises(DataError, match="no rows"):
        PosteriorStats.empty(2, 0, 5).covariance()
