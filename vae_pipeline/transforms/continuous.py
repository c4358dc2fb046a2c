"""Mode-specific normalisation of a continuous column (CTGAN/TVAE, Xu et al. 2019, section 4.2).

A Bayesian Gaussian mixture with a Dirichlet-process prior is fitted on the column's reservoir sample; a value
is encoded as its mode (one-hot) and its offset within that mode, alpha = (x - mean_k) / (4 std_k). Integer and
temporal columns are decoded by rounding; decoded values are clipped to the range seen in training.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pyarrow as pa

from vae_pipeline.errors import DataError
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike, is_temporal, numeric_to_arrow, numeric_values
from vae_pipeline.transforms.base import ColumnTransform, row_argmax
from vae_pipeline.transforms.profile import ColumnProfile

logger = logging.getLogger(__name__)

MODE_WEIGHT_THRESHOLD = 0.005  # CTGAN's cut-off for a mixture component worth its own slot
ALPHA_CLIP = 0.99


class ContinuousColumn(ColumnTransform):
    """[alpha, one-hot(mode)] plus a null-indicator slot when the training data had nulls.

    Args:
        column: the column's name.
        arrow_type: a floating, integer, decimal or temporal type.
        max_modes: mixture components tried; those with weight <= 0.005 are dropped (at least one is kept).
    """

    kind = "continuous"
    fitted_attributes = ("weights_", "means_", "stds_", "minimum_", "maximum_", "has_nulls_", "decimals_")

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

    @property
    def rounds(self) -> bool:
        """Integer and temporal values are decoded by rounding."""
        return pa.types.is_integer(self.arrow_type) or is_temporal(self.arrow_type)

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        sample = profile.sample()
        self.minimum_, self.maximum_ = profile.minimum, profile.maximum
        self.has_nulls_ = profile.nulls > 0
        self.decimals_ = None if self.rounds else _decimals(sample)
        weights, means, stds = _fit_modes(sample, self.max_modes, seed)
        self.weights_, self.means_, self.stds_ = weights.tolist(), means.tolist(), stds.tolist()
        logger.debug("column '%s': %d modes from %d sampled values", self.column, len(means), len(sample))

    def _transform(self, array: ArrayLike) -> np.ndarray:
        values, nulls = numeric_values(array)
        if nulls.any() and not self.has_nulls_:
            raise DataError(
                f"column '{self.column}' has {int(nulls.sum())} nulls but had none when the transform was fitted; "
                "refit on data that includes nulls or fill them"
            )
        if pa.types.is_floating(self.arrow_type) and not np.isfinite(values).all():
            raise DataError(f"column '{self.column}' has NaN or infinite values; replace them with nulls")
        means, stds = np.asarray(self.means_), np.asarray(self.stds_)
        modes = self._modes(values)  # (B,)
        safe_std = np.where(stds[modes] > 0, stds[modes], 1.0)
        alpha = np.where(stds[modes] > 0, (values - means[modes]) / (4.0 * safe_std), 0.0)
        block = np.zeros((len(values), self.output_width), dtype=np.float32)
        block[:, 0] = np.clip(alpha, -ALPHA_CLIP, ALPHA_CLIP)
        block[np.arange(len(values)), 1 + modes] = 1.0
        if self.has_nulls_:
            block[nulls] = 0.0
            block[:, -1] = nulls
        return block

    def _modes(self, values: np.ndarray) -> np.ndarray:
        """Index of the component with the highest posterior responsibility for each value."""
        if len(self.means_) == 1:
            return np.zeros(len(values), dtype=np.int64)
        means, stds, weights = np.asarray(self.means_), np.asarray(self.stds_), np.asarray(self.weights_)
        z = (values[:, None] - means) / stds  # (B, K)
        log_resp = np.log(weights) - np.log(stds) - 0.5 * z**2
        return np.argmax(log_resp, axis=1)

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        # In place, one pass per step: generation decodes tens of thousands of rows per call.
        n_modes = len(self.means_)
        values = np.clip(block[:, 0], -1.0, 1.0).astype(np.float64)  # alpha
        values *= 4.0
        if n_modes == 1:
            values *= self.stds_[0]
            values += self.means_[0]
        else:
            modes = row_argmax(block[:, 1 : 1 + n_modes])
            values *= np.take(np.asarray(self.stds_), modes)
            values += np.take(np.asarray(self.means_), modes)
        np.clip(values, self.minimum_, self.maximum_, out=values)
        if self.rounds:
            np.rint(values, out=values)
        elif self.decimals_ is not None:
            np.round(values, self.decimals_, out=values)
        nulls = block[:, -1] > 0.5 if self.has_nulls_ else np.zeros(len(block), dtype=bool)
        return numeric_to_arrow(values, nulls, self.arrow_type)

    def _spans(self, offset: int) -> list[Span]:
        n_modes = len(self.means_)
        null_slot = offset + 1 + n_modes if self.has_nulls_ else None
        spans = [
            Span("gaussian", offset, offset + 1, self.column, null_slot),
            Span("softmax", offset + 1, offset + 1 + n_modes, self.column, null_slot),
        ]
        if null_slot is not None:
            spans.append(Span("bernoulli", null_slot, null_slot + 1, self.column))
        return spans


def _decimals(sample: np.ndarray, most: int = 4) -> int | None:
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
