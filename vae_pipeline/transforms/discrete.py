"""Numbers with a small observed support: which numeric columns are categorical, discrete or continuous, and the
discrete column transform that writes back exactly the values it saw.

A discrete column is modelled like a continuous one (the same spans, so the model needs no change) and each
decoded value is snapped to the nearest value of the observed support, written in the input's Arrow type: a float
column binned at 17.5, 22, 27 comes back as exactly those floats, never 17.6.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.transforms.arrow_types import numeric_to_arrow
from vae_pipeline.transforms.continuous import ContinuousColumn, fewest_decimals
from vae_pipeline.transforms.profile import ColumnProfile

NumericKind: TypeAlias = Literal["categorical", "discrete", "continuous"]

# Discrete when the values repeat 10 times each on average: the data then shows its support (a sample that small
# against the rows would have found most other values if the column took them) and enough rows per value for
# the model to learn their frequencies. A continuous measurement keeps nearly one value per row and stays continuous.
ROWS_PER_VALUE = 10
# Or discrete when every value lies on a grid min + k * step with at most half as many points as rows (0.5-steps,
# whole numbers, multiples of 25 g): decoding onto the observed grid values never invents a finer value.
ROWS_PER_GRID_POINT = 2
# Snapping decoded values: a table of 4 buckets per cut between support values, and at most 4 cuts in a bucket
# (more clustered supports use a binary search).
_BUCKETS_PER_CUT = 4
_MAX_CUTS_PER_BUCKET = 4


def numeric_kind(profile: ColumnProfile, config: DataConfig) -> NumericKind:
    """How to model a numeric (integer, floating or decimal) column; see `numeric_decision` for the rules."""
    return numeric_decision(profile, config)[0]


def numeric_decision(profile: ColumnProfile, config: DataConfig) -> tuple[NumericKind, str]:
    """(kind, why) for a numeric column from its profile, in the order the rules are tried:

    - at most `config.categorical_max_distinct` distinct values: "categorical" (one-hot over the observed values);
    - the distinct set was collected whole and each value appears `ROWS_PER_VALUE` times on average, or the values
      lie on a grid with at most one point per `ROWS_PER_GRID_POINT` rows: "discrete";
    - otherwise "continuous".

    Raises:
        ValueError: the profile did not collect distinct values up to `config.categorical_max_distinct`.
    """
    if profile.distinct_cap < config.categorical_max_distinct:
        raise ValueError(
            f"the profile of column '{profile.name}' collects {profile.distinct_cap} distinct values, fewer than "
            f"data.categorical_max_distinct={config.categorical_max_distinct}; profile numeric columns with a "
            "larger distinct cap"
        )
    count, rows = profile.n_distinct, profile.non_null
    if not profile.overflowed and count <= config.categorical_max_distinct:
        return (
            "categorical",
            f"{count} distinct values (at most data.categorical_max_distinct={config.categorical_max_distinct})",
        )
    if profile.overflowed:
        return "continuous", f"more than {profile.distinct_cap} distinct values"
    if count * ROWS_PER_VALUE <= rows:
        return "discrete", f"{count} distinct values in {rows} rows"
    points = grid_points(np.asarray([float(value) for value in profile.distinct]))
    if points is not None and points * ROWS_PER_GRID_POINT <= rows:
        return "discrete", f"{count} distinct values on a grid of {points} points in {rows} rows"
    return "continuous", f"{count} distinct values in {rows} rows"


def grid_points(values: np.ndarray) -> int | None:
    """Points of the coarsest evenly spaced grid from min to max that holds every distinct value exactly.

    None when the values need more than 4 decimals or two of them would share a grid point (values that only look
    whole at a large magnitude, e.g. 1e9 + 0.3).
    """
    decimals = fewest_decimals(values)
    if decimals is None or len(values) < 2:
        return None
    scaled = np.rint((values - values.min()) * 10**decimals)
    if scaled.max() >= 2**53:  # beyond exact integers in float64
        return None
    steps = scaled.astype(np.int64)
    if len(np.unique(steps)) != len(values):
        return None
    return int(steps.max() // np.gcd.reduce(steps)) + 1


class DiscreteColumn(ContinuousColumn):
    """A continuous column whose decoded values snap to the nearest value of the observed support.

    Args:
        column: the column's name.
        arrow_type: an integer, floating or decimal type; decoded values keep it (float stays float).
        max_modes: mixture components tried, as for a continuous column.
    """

    kind = "discrete"
    scored_as: ClassVar[str | None] = "continuous"  # by its distribution's shape, plus metrics.outside_support
    fitted_attributes = (*ContinuousColumn.fitted_attributes, "support_")

    def __init__(self, column: str, arrow_type: pa.DataType, *, max_modes: int = 10) -> None:
        super().__init__(column, arrow_type, max_modes=max_modes)
        self.support_: list[int | float] = []

    @property
    def rounds(self) -> bool:
        """Never: snapping to the support replaces rounding (rounding first could move a value across a midpoint)."""
        return False

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        if profile.overflowed or not profile.distinct:
            raise DataError(
                f"column '{self.column}' has more than {profile.distinct_cap} distinct values (or they were not "
                f"collected), too many to model as discrete; set data.column_kinds: {{{self.column}: continuous}}"
            )
        super()._fit(profile, seed)
        self.decimals_ = None  # the support carries the column's own precision
        self.support_ = sorted(_json_number(value) for value in profile.distinct)

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        values = snap(self._decode_values(block), np.asarray(self.support_, dtype=np.float64))
        return numeric_to_arrow(values, self._decode_nulls(block), self.arrow_type)


def snap(values: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Each value replaced by the nearest of the sorted `support` (the lower one on a tie)."""
    cuts = (support[:-1] + support[1:]) / 2.0  # (S - 1,) midpoints between neighbours
    return np.take(support, cut_rank(cuts, values))


def cut_rank(cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.searchsorted(cuts, values)`, the number of cuts below each value, found through a bucket table.

    A binary search per value costs about 40 ns on decoded values, which come in random order (every step is a
    mispredicted branch): three discrete columns took longer than all other columns' decoding together. Buckets
    of equal width over the cuts, with b(x) = floor((x - lo) · scale) monotone in x, give each value its rank up to
    the few cuts in its own bucket, which whole-array comparisons then count. Exact, NaN included (ranked last);
    cuts too clustered for a small table are binary-searched as before.
    """
    if len(cuts) < 2 or not np.isfinite(cuts[-1] - cuts[0]) or cuts[-1] == cuts[0]:
        return np.searchsorted(cuts, values)
    n_buckets = _BUCKETS_PER_CUT * len(cuts)
    scale = n_buckets / (cuts[-1] - cuts[0])
    if not np.isfinite(scale):  # cuts closer than the float range can divide
        return np.searchsorted(cuts, values)
    cut_buckets = _bucket(cuts, cuts[0], scale, n_buckets)  # (S - 1,) non-decreasing
    steps = int(np.bincount(cut_buckets).max())
    if steps > _MAX_CUTS_PER_BUCKET:
        return np.searchsorted(cuts, values)
    below = np.searchsorted(cut_buckets, np.arange(n_buckets))  # (n_buckets,) cuts in lower buckets, all below
    padded = np.append(cuts, np.inf)  # a rank never passes the last cut
    rank = np.take(below, _bucket(values, cuts[0], scale, n_buckets))
    for _ in range(steps):  # the cuts of a value's own bucket below it; those of higher buckets lie above it
        rank += np.take(padded, rank) < values
    nan = np.isnan(values)
    if nan.any():
        rank[nan] = len(cuts)
    return rank


def _bucket(x: np.ndarray, lo: float, scale: float, n_buckets: int) -> np.ndarray:
    """floor((x - lo) · scale) clipped to [0, n_buckets) (NaN to the last bucket): monotone in x."""
    position = np.subtract(x, lo, dtype=np.float64)
    position *= scale
    np.fmin(position, n_buckets - 1, out=position)
    np.fmax(position, 0, out=position)
    return position.astype(np.intp)


def _json_number(value: Any) -> int | float:
    """An observed value as a JSON number: integers stay ints, floats and decimals become floats."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float | Decimal | np.floating):
        return float(value)
    raise DataError(f"value {value!r} of type {type(value).__name__} is not a number; a discrete column holds numbers")
