"""Mode-specific normalisation of a continuous column (CTGAN/TVAE, Xu et al. 2019, section 4.2), with point masses.

A Bayesian Gaussian mixture with a Dirichlet-process prior is fitted on the column's reservoir sample; a value
is encoded as its mode (one-hot) and its offset within that mode, alpha = (x - mean_k) / (4 std_k). Integer and
temporal columns are decoded by rounding; decoded values are clipped to the range seen in training.

Values on which the column piles up (an exact 0, a minimum, a cap, a round number) are point masses: each gets a
mode slot of its own after the mixture's, with alpha 0, and decodes to exactly that value; the mixture is fitted
on the other values only (CTAB-GAN's mixed-type encoder, Zhao et al. 2021, section 3.2, with the modes found in
the data instead of named by the user). A column without point masses has the same layout and state as before.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, dense_values, is_temporal, numeric_to_arrow, numeric_values
from vae_pipeline.transforms.base import ColumnTransform, row_argmax
from vae_pipeline.transforms.profile import ColumnProfile

logger = logging.getLogger(__name__)

MODE_WEIGHT_THRESHOLD = 0.005  # CTGAN's cut-off for a mixture component worth its own slot
ALPHA_CLIP = 0.99

# A point mass is a sampled value that holds at least 1% of the sample and at least 10 sampled rows (below that a
# tie is chance, not a pile), and at least 5x the median count of its 6 nearest distinct values by rank. Those
# neighbours' counts are the density's own estimate of what one exact value receives at the data's resolution
# (1 for a continuous spread, about the same as the value itself on a smooth discrete one), so a 0 or a cap far
# above its neighbours is a mass, while the peak of a smooth integer distribution is not.
POINT_MASS_MIN_SHARE = 0.01
POINT_MASS_MIN_COUNT = 10
POINT_MASS_RATIO = 5.0
POINT_MASS_NEIGHBOURS = 6
MAX_POINT_MASSES = 10  # the largest piles; more than this is a discrete column, see transforms/discrete.py


class ContinuousColumn(ColumnTransform):
    """[alpha, one-hot(mixture modes, then point masses)] plus a null-indicator slot when the data had nulls.

    Args:
        column: the column's name.
        arrow_type: a floating, integer, decimal or temporal type.
        max_modes: mixture components tried; those with weight <= 0.005 are dropped (at least one is kept).
    """

    kind = "continuous"
    scored_as: ClassVar[str | None] = "continuous"
    fitted_attributes: ClassVar[tuple[str, ...]] = (
        "weights_",
        "means_",
        "stds_",
        "minimum_",
        "maximum_",
        "has_nulls_",
        "decimals_",
    )

    def __init__(self, column: str, arrow_type: pa.DataType, *, max_modes: int = 10) -> None:
        super().__init__(column, arrow_type)
        self.max_modes = max_modes
        self.weights_: list[float] = []
        self.means_: list[float] = []
        self.stds_: list[float] = []
        self.minimum_ = 0.0
        self.maximum_ = 0.0
        self.has_nulls_ = False
        self.decimals_: int | None = None
        self.point_masses_: list[float] = []  # sorted; optional in the state, see state_dict

    def scoring_values(self, array: ArrayLike) -> ArrayLike:
        """Dates and times are scored as the integers they are stored as (the evaluation compares numbers)."""
        return dense_values(array) if is_temporal(self.arrow_type) else array

    @property
    def rounds(self) -> bool:
        """Integer and temporal values are decoded by rounding."""
        return pa.types.is_integer(self.arrow_type) or is_temporal(self.arrow_type)

    def state_dict(self) -> dict[str, Any]:
        # Point masses are written only when there are some: a column without them keeps the state it had before
        # they existed, and bundles written then load unchanged.
        state = super().state_dict()
        if self.point_masses_:
            state["point_masses_"] = list(self.point_masses_)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> ContinuousColumn:
        super().load_state_dict(state)
        self.point_masses_ = [float(value) for value in state.get("point_masses_", [])]
        return self

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        sample = profile.sample()
        self.minimum_, self.maximum_ = profile.minimum, profile.maximum
        self.has_nulls_ = profile.nulls > 0
        self.decimals_ = None if self.rounds else fewest_decimals(sample)
        masses = point_masses(sample)
        rest = sample[~np.isin(sample, masses)]
        weights, means, stds = _fit_modes(rest if len(rest) else sample, self.max_modes, seed)
        self.weights_, self.means_, self.stds_ = weights.tolist(), means.tolist(), stds.tolist()
        self.point_masses_ = masses.tolist()
        logger.debug(
            "column '%s': %d modes and point masses %s from %d sampled values",
            self.column,
            len(means),
            self.point_masses_,
            len(sample),
        )

    def _transform(self, array: ArrayLike) -> np.ndarray:
        values, nulls = numeric_values(array)
        if nulls.any() and not self.has_nulls_:
            raise DataError(
                f"column '{self.column}' has {int(nulls.sum())} nulls but had none when the transform was fitted; "
                "refit on data that includes nulls or fill them"
            )
        if pa.types.is_floating(self.arrow_type) and not np.isfinite(values).all():
            raise DataError(f"column '{self.column}' has NaN or infinite values; replace them with nulls")
        means, stds = self._mode_means_and_stds()
        modes = self._modes(values)  # (B,)
        safe_std = np.where(stds[modes] > 0, stds[modes], 1.0)
        alpha = np.where(stds[modes] > 0, (values - means[modes]) / (4.0 * safe_std), 0.0)  # 0 on a point mass
        block = np.zeros((len(values), self.output_width), dtype=np.float32)
        block[:, 0] = np.clip(alpha, -ALPHA_CLIP, ALPHA_CLIP)
        block[np.arange(len(values)), 1 + modes] = 1.0
        if self.has_nulls_:
            block[nulls] = 0.0
            block[:, -1] = nulls
        return block

    def _mode_means_and_stds(self) -> tuple[np.ndarray, np.ndarray]:
        """(K + P,) means and stds of every mode slot: a point mass is a mode of width zero at its value."""
        masses = self.point_masses_
        return np.asarray(self.means_ + masses), np.asarray(self.stds_ + [0.0] * len(masses))

    def _modes(self, values: np.ndarray) -> np.ndarray:
        """Each value's mode slot: its point mass's slot, else the mixture component most responsible for it."""
        n_modes = len(self.means_)
        if n_modes == 1:
            modes = np.zeros(len(values), dtype=np.int64)
        else:
            means, stds, weights = np.asarray(self.means_), np.asarray(self.stds_), np.asarray(self.weights_)
            z = (values[:, None] - means) / stds  # (B, K)
            log_resp = np.log(weights) - np.log(stds) - 0.5 * z**2
            modes = np.argmax(log_resp, axis=1)
        if self.point_masses_:
            masses = np.asarray(self.point_masses_)
            index = np.minimum(np.searchsorted(masses, values), len(masses) - 1)
            on_mass = masses[index] == values
            modes[on_mass] = n_modes + index[on_mass]
        return modes

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        return numeric_to_arrow(self._decode_values(block), self._decode_nulls(block), self.arrow_type)

    def _decode_values(self, block: np.ndarray) -> np.ndarray:
        """(B,) float64 values, clipped, rounded and exact on point masses (nulls' rows hold any value)."""
        # In place, one pass per step: generation decodes tens of thousands of rows per call.
        n_modes, n_masses = len(self.means_), len(self.point_masses_)
        values = np.clip(block[:, 0], -1.0, 1.0).astype(np.float64)  # alpha
        values *= 4.0
        if n_modes + n_masses == 1:
            values *= self.stds_[0]
            values += self.means_[0]
        else:
            means, stds = self._mode_means_and_stds()
            modes = row_argmax(block[:, 1 : 1 + n_modes + n_masses])
            values *= np.take(stds, modes)
            values += np.take(means, modes)
        np.clip(values, self.minimum_, self.maximum_, out=values)
        if self.rounds:
            np.rint(values, out=values)
        elif self.decimals_ is not None:
            np.round(values, self.decimals_, out=values)
        if n_masses:  # set again after rounding, which may move a mass by an ulp (or a value off its 4 decimals)
            on_mass = modes >= n_modes
            values[on_mass] = np.take(np.asarray(self.point_masses_), modes[on_mass] - n_modes)
        return values

    def _decode_nulls(self, block: np.ndarray) -> np.ndarray:
        return block[:, -1] > 0.5 if self.has_nulls_ else np.zeros(len(block), dtype=bool)

    def _spans(self, offset: int) -> list[Span]:
        n_slots = len(self.means_) + len(self.point_masses_)
        null_slot = offset + 1 + n_slots if self.has_nulls_ else None
        spans = [
            Span("gaussian", offset, offset + 1, self.column, null_slot),
            Span("softmax", offset + 1, offset + 1 + n_slots, self.column, null_slot),
        ]
        if null_slot is not None:
            spans.append(Span("bernoulli", null_slot, null_slot + 1, self.column))
        return spans


def fewest_decimals(sample: np.ndarray, most: int = 4) -> int | None:
    """The fewest decimals every sampled value is written with (RDT's learned rounding), None beyond `most`.

    A float column of whole numbers or of one-decimal measurements is decoded with the same precision, so
    synthetic values do not give themselves away by their digits.
    """
    finite = sample[np.isfinite(sample)]
    for decimals in range(most + 1):
        scaled = finite * 10**decimals
        if np.allclose(scaled, np.rint(scaled), rtol=0, atol=1e-6 * max(1.0, float(np.abs(scaled).max(initial=0)))):
            return decimals
    return None


def point_masses(sample: np.ndarray) -> np.ndarray:
    """The sorted values the sample piles up on (rule above POINT_MASS_MIN_SHARE); empty for most columns."""
    values, counts = np.unique(sample, return_counts=True)
    if len(values) < 2:  # a constant column is already one mode of width zero
        return np.empty(0)
    floor = max(POINT_MASS_MIN_COUNT, POINT_MASS_MIN_SHARE * len(sample))
    candidates = np.flatnonzero(counts >= floor).tolist()
    found = [i for i in candidates if counts[i] >= POINT_MASS_RATIO * _neighbour_count(counts, i)]
    largest = sorted(found, key=lambda i: -counts[i])[:MAX_POINT_MASSES]
    return values[np.sort(np.asarray(largest, dtype=np.int64))]


def _neighbour_count(counts: np.ndarray, index: int) -> float:
    """Median count of the POINT_MASS_NEIGHBOURS distinct values nearest `index` by rank (fewer near the ends)."""
    half = POINT_MASS_NEIGHBOURS // 2
    start = max(0, min(index - half, len(counts) - 1 - POINT_MASS_NEIGHBOURS))
    window = np.delete(counts[start : start + POINT_MASS_NEIGHBOURS + 1], index - start)
    return float(np.median(window))


def _fit_modes(sample: np.ndarray, max_modes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, stds) of the kept mixture components, in the column's own units."""
    # Imported here: scikit-learn takes about a second to import, and generation workers never fit.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    center, scale = float(sample.mean()), float(sample.std())
    if scale == 0.0 or len(np.unique(sample)) < 2:  # a constant column: one mode of width zero
        return np.ones(1), np.array([center]), np.zeros(1)
    # Standardise first so the mixture's covariance regulariser means the same for grams and nanoseconds.
    z = ((sample - center) / scale)[:, None]
    mixture = BayesianGaussianMixture(
        n_components=min(max_modes, len(z)),
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=0.001,
        n_init=1,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(z)
    keep = mixture.weights_ > MODE_WEIGHT_THRESHOLD
    if not keep.any():
        keep = mixture.weights_ == mixture.weights_.max()
    weights = mixture.weights_[keep] / mixture.weights_[keep].sum()
    means = center + scale * mixture.means_[keep, 0]
    stds = scale * np.sqrt(mixture.covariances_[keep].reshape(-1))
    return weights, means, stds
