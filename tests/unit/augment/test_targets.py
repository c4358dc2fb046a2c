"""Augmentation targets: totals per class from balance, ratio:R and CLASS=N, and every bad target refused."""

from __future__ import annotations

import pytest

from vae_pipeline.augment.targets import parse_target
from vae_pipeline.errors import ConfigError

REAL = {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}


def test_balance_tops_every_class_up_to_the_majority() -> None:
    assert parse_target("balance").synthetic(REAL) == {"Adelie": 0, "Gentoo": 28, "Chinstrap": 84}


def test_ratio_brings_minorities_to_a_share_of_the_majority_and_never_removes_rows() -> None:
    # ceil(0.5 * 152) = 76: Gentoo already has more and gets none.
    assert parse_target("ratio:0.5").synthetic(REAL) == {"Adelie": 0, "Gentoo": 0, "Chinstrap": 8}


def test_counts_are_totals_per_class_and_unnamed_classes_get_none() -> None:
    assert parse_target("Chinstrap=100, Gentoo=124").synthetic(REAL) == {"Adelie": 0, "Gentoo": 0, "Chinstrap": 32}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("balanced", "is not a target; use balance, ratio:R"),
        ("ratio:x", "'x' is not a number"),
        ("ratio:1.5", r"R must lie in \(0, 1\]"),
        ("ratio:0", r"R must lie in \(0, 1\]"),
        ("Chinstrap=-5", "the count of class 'Chinstrap' is negative"),
        ("Chinstrap=2.5", r"the count of class 'Chinstrap' \('2.5'\) is not an integer"),
        ("Chinstrap", "is not a target"),
        ("=5", "'=5' is not CLASS=N"),
    ],
)
def test_bad_targets_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_target(text)


def test_a_target_naming_an_unknown_class_or_below_the_real_count_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown class\(es\) \['Emperor'\]"):
        parse_target("Emperor=10").synthetic(REAL)
    with pytest.raises(ConfigError, match="asks for 50 rows of class 'Adelie', which already has 152 real rows"):
        parse_target("Adelie=50").synthetic(REAL)
