"""The DCR ratio rule the privacy guard reads, shared by the tabular (`privacy.py`) and image scores.

Synthetic over real distance to the closest training record: medians, or means where the real median is 0. Where
most training rows repeat another, the real median is 0 and compares nothing, while the means still tell how far
rows sit on average. Where every real row has a twin (both real figures 0), rows that copy tie (1.0) and rows that
sit farther pass with `MAX_DCR_RATIO`, a finite stand-in for infinity that JSON can hold.
"""

from __future__ import annotations

MAX_DCR_RATIO = 100.0


def ratio(synthetic_median: float, synthetic_mean: float, real_median: float, real_mean: float) -> float:
    """The DCR ratio from the two distance distributions' medians and means (see the module docstring)."""
    if real_median > 0:
        return synthetic_median / real_median
    if real_mean > 0:
        return min(synthetic_mean / real_mean, MAX_DCR_RATIO)
    return 1.0 if synthetic_mean == 0 else MAX_DCR_RATIO
