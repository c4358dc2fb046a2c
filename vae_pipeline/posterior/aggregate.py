"""The finalised aggregate posterior q(z) = (1/N) Σ_x q(z|x): moments, a GMM fit and diagnostics, as stored.

`finalize_posterior` turns merged `PosteriorStats` into an `AggregatePosterior`; samplers fit on the latter.
On storage it is two files under one URL: `posterior.safetensors` (arrays) and `posterior.json` (scalars,
labels, fingerprint, config, diagnostics). The JSON is written last and is the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy

from vae_pipeline import storage
from vae_pipeline.config import StatisticsConfig
from vae_pipeline.errors import DataError, StorageError
from vae_pipeline.posterior.stats import PosteriorStats

if TYPE_CHECKING:  # scikit-learn costs every generation actor a second at start-up; only the fit needs it
    from sklearn.mixture import GaussianMixture

logger = logging.getLogger(__name__)

JSON_NAME = "posterior.json"
ARRAYS_NAME = "posterior.safetensors"
_FORMAT = "aggregate-posterior/1"
_SAMPLES_PER_COMPONENT = 20  # a GMM component needs this many reservoir rows to be worth trying
_BIC_PATIENCE = 2  # larger GMMs tried after the best BIC so far before the search stops
_LOGQ_BLOCK = 1 << 22  # (draws x reservoir rows) entries evaluated at once when computing log q(z)
# Fields stored in posterior.json; every other field is an array in posterior.safetensors.
_SCALARS: tuple[str, ...] = (
    "latent_dim",
    "count",
    "active_units",
    "gmm_components",
    "kl_to_prior_estimate",
    "hole_fraction",
    "hole_threshold",
    "model_fingerprint",
    "class_labels",
    "config",
)


@dataclass
class AggregatePosterior:
    """Finalised statistics of q(z). Shapes: L latent dims, C classes, M reservoir rows, K GMM components."""

    latent_dim: int
    count: int
    mean: np.ndarray  # (L,)
    covariance: np.ndarray  # (L, L), positive definite
    kl_per_dim: np.ndarray  # (L,) mean KL(q(z_d|x) || N(0, 1)) in nats
    active_units: int
    active_mask: np.ndarray  # (L,) bool
    class_labels: list[Any]  # C JSON values; class index i means class_labels[i]
    class_counts: np.ndarray  # (C,) int64
    class_means: np.ndarray  # (C, L)
    class_covariances: np.ndarray  # (C, L, L), positive definite
    reservoir_mu: np.ndarray  # (M, L)
    reservoir_logvar: np.ndarray  # (M, L)
    reservoir_labels: np.ndarray  # (M,) int64 class index, -1 when unlabelled
    gmm_weights: np.ndarray  # (K,)
    gmm_means: np.ndarray  # (K, L)
    gmm_covariances: np.ndarray  # (K, L, L)
    gmm_components: int
    kl_to_prior_estimate: float  # Monte Carlo KL(q(z) || N(0, I)) in nats
    hole_fraction: float  # share of prior draws where log q(z) is below hole_threshold
    hole_threshold: float  # the config.hole_quantile quantile of log q(z) for z ~ q
    model_fingerprint: str
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """A small JSON-able dict for `vae-pipeline inspect`."""
        return {
            "count": self.count,
            "latent_dim": self.latent_dim,
            "active_units": self.active_units,
            "kl_to_prior_estimate": round(self.kl_to_prior_estimate, 6),
            "hole_fraction": round(self.hole_fraction, 6),
            "gmm_components": self.gmm_components,
            "classes": len(self.class_labels),
        }


def finalize_posterior(
    stats: PosteriorStats, *, class_labels: list[Any], config: StatisticsConfig, model_fingerprint: str
) -> AggregatePosterior:
    """Compute moments, fit a GMM on the reservoir and estimate KL to the prior and the prior's holes.

    Args:
        stats: merged statistics of every row.
        class_labels: the label value of each class index (empty when there is no label column).
        config: the statistics config; `seed` drives every random draw here.
        model_fingerprint: identifies the model bundle the statistics belong to.
    """
    if stats.n == 0 or stats.reservoir_mu.shape[0] == 0:
        raise DataError("posterior statistics hold no rows; the encoded dataset was empty, check the input data")
    if len(class_labels) != stats.n_classes:
        raise DataError(f"got {len(class_labels)} class labels for statistics with {stats.n_classes} classes")
    rng = np.random.default_rng(config.seed)
    covariance = positive_definite(stats.covariance())
    class_means, class_covariances = _class_moments(stats, stats.mean(), covariance)
    mu, logvar = stats.reservoir_mu, stats.reservoir_logvar
    gmm = _fit_gmm(mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape), config)
    kl, threshold, holes = _kl_and_holes(mu, logvar, config, rng)
    mask = stats.active_mask()
    return AggregatePosterior(
        latent_dim=stats.latent_dim,
        count=stats.n,
        mean=stats.mean(),
        covariance=covariance,
        kl_per_dim=stats.kl_per_dim(),
        active_units=int(mask.sum()),
        active_mask=mask,
        class_labels=list(class_labels),
        class_counts=stats.class_counts(),
        class_means=class_means,
        class_covariances=class_covariances,
        reservoir_mu=mu.copy(),
        reservoir_logvar=logvar.copy(),
        reservoir_labels=stats.reservoir_labels.copy(),
        gmm_weights=gmm.weights_,
        gmm_means=gmm.means_,
        gmm_covariances=np.stack([positive_definite(c) for c in gmm.covariances_]),
        gmm_components=int(gmm.n_components),
        kl_to_prior_estimate=kl,
        hole_fraction=holes,
        hole_threshold=threshold,
        model_fingerprint=model_fingerprint,
        config=config.model_dump(mode="json"),
    )


def positive_definite(cov: np.ndarray) -> np.ndarray:
    """`cov` made symmetric, with the smallest diagonal jitter that lets Cholesky succeed."""
    cov = (cov + cov.T) / 2
    scale = max(float(np.mean(np.diag(cov))), 1e-12)
    for exponent in range(-10, 1):
        try:
            np.linalg.cholesky(cov)
            return cov
        except np.linalg.LinAlgError:
            cov = cov + np.eye(cov.shape[0]) * scale * 10.0**exponent
    raise DataError("the posterior covariance is not positive definite even with jitter; check the encoder outputs")


def _class_moments(stats: PosteriorStats, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means and covariances; the global ones stand in for classes with too few rows."""
    means = np.tile(mean, (stats.n_classes, 1))
    covariances = np.tile(covariance, (stats.n_classes, 1, 1))
    for c, count in enumerate(stats.class_counts()):
        if count >= 1:
            means[c] = stats.class_mean(c)
        if count >= 2:
            covariances[c] = positive_definite(stats.class_covariance(c))
        else:
            logger.warning("class index %d has %d row(s); using the global covariance for it", c, count)
    return means, covariances


def _fit_gmm(z: np.ndarray, config: StatisticsConfig) -> GaussianMixture:
    """The full-covariance GMM with the lowest BIC over k = 1..min(max components, M // 20).

    The search stops once `_BIC_PATIENCE` larger k in a row have not lowered the BIC: beyond the best k the BIC
    climbs with every component's parameters, and the largest fits are the costliest. BLAS runs on one thread: on
    (M, L) = (10,000, 16) arrays more threads gain nothing, and on a busy machine their spinning made one fit take
    seconds instead of a tenth of one.
    """
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    max_k = min(config.gmm_max_components, max(z.shape[0] // _SAMPLES_PER_COMPONENT, 1))
    best: GaussianMixture | None = None
    best_bic, best_k = np.inf, 0
    with threadpool_limits(limits=1):
        for k in range(1, max_k + 1):
            gmm = GaussianMixture(k, covariance_type="full", random_state=config.seed, reg_covar=1e-6).fit(z)
            bic = gmm.bic(z)
            logger.debug("GMM with %d components: BIC %.3f", k, bic)
            if bic < best_bic:
                best, best_bic, best_k = gmm, bic, k
            elif k - best_k >= _BIC_PATIENCE:
                break
    assert best is not None  # max_k >= 1
    return best


def _kl_and_holes(
    mu: np.ndarray, logvar: np.ndarray, config: StatisticsConfig, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(KL(q || N(0, I)) estimate, hole threshold, hole fraction), with q the reservoir mixture.

    KL = E_q[log q(z) - log p(z)] by Monte Carlo. A "hole" is where the prior puts mass but q has little: the
    share of prior draws whose log q falls below the `hole_quantile` quantile of log q under q itself.
    """
    draws = config.hole_draws
    rows = rng.integers(mu.shape[0], size=draws)
    z_q = mu[rows] + np.exp(0.5 * logvar[rows]) * rng.standard_normal((draws, mu.shape[1]))
    z_p = rng.standard_normal((draws, mu.shape[1]))
    log_q = log_mixture_density(z_q, mu, logvar)
    kl = float(np.mean(log_q - _log_standard_normal(z_q)))
    threshold = float(np.quantile(log_q, config.hole_quantile))
    holes = float(np.mean(log_mixture_density(z_p, mu, logvar) < threshold))
    return kl, threshold, holes


def log_mixture_density(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log (1/M) Σ_i N(z; μ_i, diag σ_i²) for each row of z (n, L); evaluated in blocks to bound memory."""
    precision = np.exp(-logvar)  # (M, L)
    # Expand the quadratic form so each block is two matrix products instead of an (n, M, L) tensor:
    # Σ_d (z_d - μ_id)² / σ_id² = z² · p_i - 2 z · (μ_i p_i) + Σ_d μ_id² p_id.
    const = -0.5 * ((mu**2 * precision).sum(axis=1) + logvar.sum(axis=1) + mu.shape[1] * np.log(2 * np.pi))
    weighted_mu = mu * precision
    block = max(1, _LOGQ_BLOCK // mu.shape[0])
    out = np.empty(z.shape[0])
    for start in range(0, z.shape[0], block):
        zb = z[start : start + block]
        log_n = const - 0.5 * (zb**2) @ precision.T + zb @ weighted_mu.T  # (b, M)
        peak = log_n.max(axis=1, keepdims=True)  # log-sum-exp, shifted by the row maximum for stability
        total = np.log(np.exp(log_n - peak).sum(axis=1)) + peak[:, 0]
        out[start : start + block] = total - np.log(mu.shape[0])
    return out


def _log_standard_normal(z: np.ndarray) -> np.ndarray:
    return -0.5 * (z**2).sum(axis=1) - 0.5 * z.shape[1] * np.log(2 * np.pi)


# -------------------------------------------------------------------- storage


def save_posterior(posterior: AggregatePosterior, url: str) -> None:
    """Write `url/posterior.safetensors` then `url/posterior.json` (the commit)."""
    arrays = {
        f.name: np.ascontiguousarray(getattr(posterior, f.name)) for f in fields(posterior) if f.name not in _SCALARS
    }
    storage.atomic_write(storage.join_url(url, ARRAYS_NAME), safetensors.numpy.save(arrays))
    document = {name: getattr(posterior, name) for name in _SCALARS}
    document["format"] = _FORMAT
    document["summary"] = posterior.summary()
    storage.write_json(storage.join_url(url, JSON_NAME), document)


def load_posterior(url: str) -> AggregatePosterior:
    """Read what `save_posterior` wrote; StorageError when it is missing or incomplete."""
    json_url = storage.join_url(url, JSON_NAME)
    if not storage.exists(json_url):
        raise StorageError(
            f"no aggregate-posterior statistics at {storage.redact_url(url)}; run `vae-pipeline stats` first"
        )
    document = storage.read_json(json_url)
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise StorageError(f"{storage.redact_url(json_url)} is not a posterior file; rerun `vae-pipeline stats`")
    try:
        arrays = safetensors.numpy.load(storage.read_bytes(storage.join_url(url, ARRAYS_NAME)))
    except StorageError as exc:
        raise StorageError(f"{exc}; rerun `vae-pipeline stats`") from exc
    except Exception as exc:
        raise StorageError(f"{storage.redact_url(url)}/{ARRAYS_NAME} is corrupt; rerun `vae-pipeline stats`") from exc
    values = {name: document[name] for name in _SCALARS if name in document}
    missing = [f.name for f in fields(AggregatePosterior) if f.name not in values and f.name not in arrays]
    if missing:
        raise StorageError(f"{storage.redact_url(url)} lacks {missing}; rerun `vae-pipeline stats`")
    values.update({f.name: arrays[f.name] for f in fields(AggregatePosterior) if f.name in arrays})
    return AggregatePosterior(**values)
