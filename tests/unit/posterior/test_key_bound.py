"""A key bound on reservoir candidates: batches ship a few rows instead of a full reservoir, with the same result."""

from __future__ import annotations

import numpy as np
import pytest

from vae_pipeline.posterior.job import reservoir_key_bound
from vae_pipeline.posterior.stats import PosteriorStats

ROWS, DIM, CLASSES, RESERVOIR, BATCH = 20_000, 3, 2, 100, 1_000


def _stats(keys_below: int | None) -> tuple[PosteriorStats, int]:
    """Merged statistics of 20 batches, and the reservoir rows the batches shipped in all."""
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(ROWS, DIM)), rng.normal(-1, 0.3, size=(ROWS, DIM))
    keys, labels = rng.integers(0, 2**64, size=ROWS, dtype=np.uint64), rng.integers(0, CLASSES, size=ROWS)
    total, shipped = PosteriorStats.empty(DIM, CLASSES, RESERVOIR), 0
    for start in range(0, ROWS, BATCH):
        part = PosteriorStats.empty(DIM, CLASSES, RESERVOIR)
        rows = slice(start, start + BATCH)
        part.update(mu[rows], logvar[rows], keys[rows], labels[rows], keys_below=keys_below)
        shipped += len(part.reservoir_keys)
        total = total.merge(PosteriorStats.from_bytes(part.to_bytes()))
    return total, shipped


def test_bounded_candidates_give_the_same_statistics_from_far_fewer_rows() -> None:
    bound = reservoir_key_bound(ROWS, RESERVOIR)
    assert bound is not None
    bounded, shipped = _stats(bound)
    unbounded, shipped_all = _stats(None)
    assert bounded.to_bytes() == unbounded.to_bytes()
    assert shipped_all == 20 * RESERVOIR
    assert RESERVOIR <= shipped <= 4 * RESERVOIR  # about 2k + 10 sqrt(k) = 300 expected


def test_a_bound_that_is_too_low_leaves_the_reservoir_short_which_the_job_detects() -> None:
    short, _ = _stats(2**50)  # about one key in 16,000 falls below it
    assert len(short.reservoir_keys) < RESERVOIR <= short.n
    assert short.n == ROWS  # the sums still count every row


@pytest.mark.parametrize(
    ("rows", "reservoir", "bounded"),
    [(400, 100, False), (600, 100, False), (700, 100, True), (10_000_000, 10_000, True), (41, 10, False)],
)
def test_the_bound_applies_only_to_inputs_much_larger_than_the_reservoir(
    rows: int, reservoir: int, bounded: bool
) -> None:
    bound = reservoir_key_bound(rows, reservoir)
    assert (bound is not None) == bounded
    if bound is not None:
        assert 0 < bound < 2**63
        expected = bound / 2**64 * rows
        assert expected >= 2 * reservoir
