"""Augmentation targets: how many rows each class should have, and so how many synthetic rows it needs.

`balance` tops every class up to the majority class's count; `ratio:R` brings each minority class up to R times the
majority's count (never below what it has); `CLASS=N,...` asks for exact totals per class (classes not named get
no synthetic rows). A class never loses real rows: a total below its real count is an error, not a trim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vae_pipeline.errors import ConfigError

TARGET_HELP = "balance, ratio:R (0 < R <= 1) or CLASS=N,CLASS=N (total rows per class)"


@dataclass(frozen=True)
class Target:
    """A parsed target: `kind` is balance, ratio or counts."""

    kind: str
    ratio: float = 1.0
    counts: tuple[tuple[str, int], ...] = ()

    def totals(self, real: dict[str, int]) -> dict[str, int]:
        """Rows each class should have in the augmented dataset, from the real rows per class (label as text)."""
        if not real:
            raise ConfigError("the label column has no non-null values; augment needs labelled rows")
        majority = max(real.values())
        if self.kind == "counts":
            asked = dict(self.counts)
            unknown = sorted(set(asked) - set(real))
            if unknown:
                raise ConfigError(f"--target names unknown class(es) {unknown}; the label's classes are {sorted(real)}")
            short = {name: (asked[name], real[name]) for name in asked if asked[name] < real[name]}
            if short:
                name, (count, has) = next(iter(short.items()))
                raise ConfigError(
                    f"--target asks for {count} rows of class {name!r}, which already has {has} real rows; "
                    "targets are totals that only add rows"
                )
            return {name: asked.get(name, count) for name, count in real.items()}
        goal = majority if self.kind == "balance" else math.ceil(self.ratio * majority)
        return {name: max(count, goal) for name, count in real.items()}

    def synthetic(self, real: dict[str, int]) -> dict[str, int]:
        """Synthetic rows per class: the total it should have minus what it has."""
        return {name: total - real[name] for name, total in self.totals(real).items()}


def parse_target(text: str) -> Target:
    """`balance`, `ratio:R` or `CLASS=N,...`; a one-line ConfigError names what is wrong."""
    text = text.strip()
    if text == "balance":
        return Target("balance")
    if text.startswith("ratio:"):
        value = text.removeprefix("ratio:")
        try:
            ratio = float(value)
        except ValueError:
            raise ConfigError(f"--target {text!r}: {value!r} is not a number; use e.g. ratio:0.5") from None
        if not 0 < ratio <= 1 or not math.isfinite(ratio):
            raise ConfigError(f"--target {text!r}: R must lie in (0, 1], the share of the majority's count")
        return Target("ratio", ratio=ratio)
    if "=" in text:
        return Target("counts", counts=tuple(_count(part, text) for part in text.split(",")))
    raise ConfigError(f"--target {text!r} is not a target; use {TARGET_HELP}")


def _count(part: str, text: str) -> tuple[str, int]:
    name, _, value = part.partition("=")
    if not name.strip() or not value.strip():
        raise ConfigError(f"--target {text!r}: {part!r} is not CLASS=N")
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(
            f"--target {text!r}: the count of class {name.strip()!r} ({value!r}) is not an integer"
        ) from None
    if count < 0:
        raise ConfigError(f"--target {text!r}: the count of class {name.strip()!r} is negative ({count})")
    return name.strip(), count
