"""Class-conditional Gaussians: choose each row's class, then z = m_c + T · chol(Σ_c) ε."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import torch

from vae_pipeline.errors import ConfigError
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, cholesky, component_factors, gaussian_mixture

logger = logging.getLogger(__name__)


class ConditionalSampler(LatentSampler):
    """Per-class moment-matched Gaussians; the returned classes are indices into the posterior's class labels.

    Args:
        temperature: multiplies each class's standard deviation.
        classes: label value (as `str(value)`) -> share of rows, normalised to sum to one; classes left out get
            no rows. None: the training shares.
    """

    config_fields: ClassVar[tuple[str, ...]] = ("classes",)

    def __init__(self, temperature: float = 1.0, *, classes: dict[str, float] | None = None) -> None:
        super().__init__(temperature)
        self.classes = dict(classes) if classes is not None else None

    def _fit(self, posterior: AggregatePosterior) -> None:
        if not posterior.class_labels:
            raise ConfigError(
                "sampler 'conditional' needs class labels, but the statistics have none; "
                "set data.label_column and rerun `vae-pipeline stats`, or pick another sampler"
            )
        self.shares_ = self._shares(posterior)
        self.means_ = torch.from_numpy(posterior.class_means.astype(np.float32))  # (C, L)
        chols = np.stack([cholesky(c) for c in posterior.class_covariances])
        self.factors_ = component_factors(chols, self.temperature)  # (C, L, L)

    def _shares(self, posterior: AggregatePosterior) -> np.ndarray:
        if self.classes is None:
            counts = np.asarray(posterior.class_counts, dtype=np.float64)
            return counts / counts.sum()
        names = [str(label) for label in posterior.class_labels]
        unknown = sorted(set(self.classes) - set(names))
        if unknown:
            raise ConfigError(f"sampler.classes names unknown class(es) {unknown}; valid classes are {names}")
        shares = np.array([float(self.classes.get(name, 0.0)) for name in names])
        if not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
            raise ConfigError(f"sampler.classes shares must be non-negative with a positive sum; got {self.classes}")
        for name, share, count in zip(names, shares, posterior.class_counts, strict=True):
            if share > 0 and count == 0:
                logger.warning("class %s had no training rows; sampling it from the global moments", name)
        return shares / shares.sum()

    def _sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return gaussian_mixture(self.shares_, self.means_, self.factors_, n, generator)
