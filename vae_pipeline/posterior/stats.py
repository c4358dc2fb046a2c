"""Sufficient statistics of the encoder's posteriors q(z|x), with an associative and commutative merge.

The statistics job encodes the data in batches, calls `update` on each batch, merges the partial results in any
order and tree shape, and finalises them (`posterior.aggregate.finalize_posterior`). Everything here is a sum or
a bottom-k selection, so the result does not depend on how the rows were batched or in which order the partials
were merged (sums up to float rounding; the reservoir exactly).

The aggregate posterior q(z) = (1/N) Σ_x q(z|x) has, by the law of total variance,
    Cov_q[z] = Cov_x[μ(x)] + E_x[diag σ²(x)].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import safetensors.numpy

from vae_pipeline.errors import DataError

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: a unit is active if Var_x(E_q[z_d | x]) > 0.01
_FORMAT = "posterior-stats/1"
_META_KEY = "vae_pipeline.posterior_stats"
_SUMS = (
    "sum_mu",
    "sum_mu_outer",
    "sum_var",
    "sum_kl",
    "class_n",
    "class_sum_mu",
    "class_sum_mu_outer",
    "class_sum_var",
)
_ARRAYS = (
    "n",
    "sum_mu",
    "sum_mu_outer",
    "sum_var",
    "sum_kl",
    "class_n",
    "class_sum_mu",
    "class_sum_mu_outer",
    "class_sum_var",
    "reservoir_mu",
    "reservoir_logvar",
    "reservoir_labels",
    "reservoir_keys",
)


@dataclass
class PosteriorStats:
    """Running sums over rows and a bottom-k reservoir of per-row posteriors.

    `update` mutates in place (one batch of rows); `merge` returns a new object and leaves both inputs alone.

    Reservoir: the `reservoir_size` rows with the smallest keys (bottom-k sampling). Keys are per-row uint64
    hashes that the caller derives from row content and a seed, so the sample is a uniform pseudo-random subset
    that does not depend on batching. Ties are broken by a total order on (key, μ, log σ², label), so any merge
    order keeps the same rows in the same order (rows equal in all of these are indistinguishable).
    Rows without a label carry label -1.
    """

    latent_dim: int
    n_classes: int
    reservoir_size: int
    n: int = 0
    sum_mu: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,)
    sum_mu_outer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (L, L)
    sum_var: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,)
    sum_kl: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,)
    class_n: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (C,)
    class_sum_mu: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (C, L)
    class_sum_mu_outer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (C, L, L)
    class_sum_var: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (C, L)
    reservoir_mu: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, L)
    reservoir_logvar: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, L)
    reservoir_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (M,)
    reservoir_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # (M,)

    @classmethod
    def empty(cls, latent_dim: int, n_classes: int, reservoir_size: int) -> PosteriorStats:
        """Statistics of zero rows: the identity of `merge`."""
        if latent_dim < 1 or n_classes < 0 or reservoir_size < 0:
            raise ValueError(
                f"need latent_dim >= 1, n_classes >= 0, reservoir_size >= 0 "
                f"(got {latent_dim}, {n_classes}, {reservoir_size})"
            )
        dim, classes = latent_dim, n_classes
        return cls(
            latent_dim=dim,
            n_classes=classes,
            reservoir_size=reservoir_size,
            sum_mu=np.zeros(dim),
            sum_mu_outer=np.zeros((dim, dim)),
            sum_var=np.zeros(dim),
            sum_kl=np.zeros(dim),
            class_n=np.zeros(classes, dtype=np.int64),
            class_sum_mu=np.zeros((classes, dim)),
            class_sum_mu_outer=np.zeros((classes, dim, dim)),
            class_sum_var=np.zeros((classes, dim)),
            reservoir_mu=np.zeros((0, dim)),
            reservoir_logvar=np.zeros((0, dim)),
            reservoir_labels=np.zeros(0, dtype=np.int64),
            reservoir_keys=np.zeros(0, dtype=np.uint64),
        )

    # ---------------------------------------------------------------- accumulation

    def update(
        self,
        mu: np.ndarray,
        logvar: np.ndarray,
        keys: np.ndarray,
        labels: np.ndarray | None = None,
        keys_below: int | None = None,
    ) -> None:
        """Add one batch of rows in place.

        Args:
            mu: (B, L) posterior means.
            logvar: (B, L) posterior log-variances.
            keys: (B,) uint64 per-row hashes that decide reservoir membership (smallest kept).
            labels: (B,) int64 class indices in [0, n_classes), or None when the data has no label column.
            keys_below: only rows with a smaller key are reservoir candidates (every row counts in the sums), so a
                batch carries a few candidates instead of a full reservoir. The reservoir of all rows is exact as
                long as at least `reservoir_size` rows in all fall below it: the caller checks.
        """
        mu, logvar, keys, labels = self._checked(mu, logvar, keys, labels)
        var = np.exp(logvar)
        self.n += mu.shape[0]
        self.sum_mu += mu.sum(axis=0)
        self.sum_mu_outer += mu.T @ mu
        self.sum_var += var.sum(axis=0)
        # KL(N(μ, σ²) || N(0, 1)) per dimension (Kingma & Welling 2014, appendix B).
        self.sum_kl += 0.5 * (mu**2 + var - 1.0 - logvar).sum(axis=0)
        if labels is not None:
            for c in np.unique(labels):
                rows = labels == c
                self.class_n[c] += int(rows.sum())
                self.class_sum_mu[c] += mu[rows].sum(axis=0)
                self.class_sum_mu_outer[c] += mu[rows].T @ mu[rows]
                self.class_sum_var[c] += var[rows].sum(axis=0)
        else:
            labels = np.full(mu.shape[0], -1, dtype=np.int64)
        if keys_below is not None:
            candidates = keys < np.uint64(keys_below)
            mu, logvar, labels, keys = mu[candidates], logvar[candidates], labels[candidates], keys[candidates]
        self._keep_smallest(
            np.concatenate([self.reservoir_mu, mu]),
            np.concatenate([self.reservoir_logvar, logvar]),
            np.concatenate([self.reservoir_labels, labels]),
            np.concatenate([self.reservoir_keys, keys]),
        )

    def merge(self, other: PosteriorStats) -> PosteriorStats:
        """A new object holding the statistics of both inputs' rows (associative and commutative)."""
        if (self.latent_dim, self.n_classes, self.reservoir_size) != (
            other.latent_dim,
            other.n_classes,
            other.reservoir_size,
        ):
            raise DataError(
                "cannot merge posterior statistics of different shapes: "
                f"(latent_dim, n_classes, reservoir_size) {self.latent_dim, self.n_classes, self.reservoir_size} "
                f"vs {other.latent_dim, other.n_classes, other.reservoir_size}; compute both with the same config"
            )
        merged = PosteriorStats.empty(self.latent_dim, self.n_classes, self.reservoir_size)
        merged.n = self.n + other.n
        for name in _SUMS:
            setattr(merged, name, getattr(self, name) + getattr(other, name))
        merged._keep_smallest(
            np.concatenate([self.reservoir_mu, other.reservoir_mu]),
            np.concatenate([self.reservoir_logvar, other.reservoir_logvar]),
            np.concatenate([self.reservoir_labels, other.reservoir_labels]),
            np.concatenate([self.reservoir_keys, other.reservoir_keys]),
        )
        return merged

    def _checked(
        self, mu: np.ndarray, logvar: np.ndarray, keys: np.ndarray, labels: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        mu = np.asarray(mu, dtype=np.float64)
        logvar = np.asarray(logvar, dtype=np.float64)
        rows = mu.shape[0] if mu.ndim == 2 else -1
        if mu.ndim != 2 or mu.shape[1] != self.latent_dim or logvar.shape != mu.shape:
            raise DataError(
                f"mu and logvar must both have shape (rows, {self.latent_dim}); got {mu.shape} and {logvar.shape}"
            )
        if not (np.isfinite(mu).all() and np.isfinite(logvar).all()):
            raise DataError(
                "mu or logvar holds NaN or inf; the encoder diverged, check training before computing stats"
            )
        keys = np.asarray(keys)
        if keys.shape != (rows,) or keys.dtype != np.uint64:
            raise DataError(f"keys must be a uint64 array of shape ({rows},); got {keys.dtype} {keys.shape}")
        if labels is None:
            return mu, logvar, keys, None
        labels = np.asarray(labels)
        if labels.shape != (rows,) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels must be an integer array of shape ({rows},); got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
        bad = labels[(labels < 0) | (labels >= self.n_classes)]
        if bad.size:
            raise DataError(
                f"labels must be class indices in [0, {self.n_classes}); got e.g. {sorted(set(bad[:5].tolist()))}"
            )
        return mu, logvar, keys, labels

    def _keep_smallest(self, mu: np.ndarray, logvar: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> None:
        """Set the reservoir to the `reservoir_size` smallest rows under the total order (key, μ, log σ², label)."""
        if keys.shape[0] > self.reservoir_size:
            # Cheap pre-selection: everything with a key up to the k-th smallest key (ties at the boundary kept).
            cutoff = np.partition(keys, self.reservoir_size - 1)[self.reservoir_size - 1] if self.reservoir_size else 0
            keep = keys <= cutoff if self.reservoir_size else np.zeros(keys.shape[0], dtype=bool)
            mu, logvar, labels, keys = mu[keep], logvar[keep], labels[keep], keys[keep]
        # np.lexsort sorts by the last key first: key, then μ columns, then log σ² columns, then label.
        order = np.lexsort((labels, *logvar.T[::-1], *mu.T[::-1], keys))[: self.reservoir_size]
        self.reservoir_mu = mu[order]
        self.reservoir_logvar = logvar[order]
        self.reservoir_labels = labels[order]
        self.reservoir_keys = keys[order]

    # ---------------------------------------------------------------- moments

    def mean(self) -> np.ndarray:
        """E_q[z] = E_x[μ], shape (L,)."""
        self._require_rows()
        return self.sum_mu / self.n

    def mu_covariance(self) -> np.ndarray:
        """Population covariance of the posterior means over rows, Cov_x[μ], shape (L, L)."""
        self._require_rows()
        mean = self.sum_mu / self.n
        cov = self.sum_mu_outer / self.n - np.outer(mean, mean)
        return (cov + cov.T) / 2

    def covariance(self) -> np.ndarray:
        """Cov_q[z] = Cov_x[μ] + diag E_x[σ²] (law of total variance), shape (L, L)."""
        return self.mu_covariance() + np.diag(self.sum_var / self.n)

    def kl_per_dim(self) -> np.ndarray:
        """Mean KL(q(z_d|x) || N(0, 1)) over rows, per latent dimension, in nats, shape (L,)."""
        self._require_rows()
        return self.sum_kl / self.n

    def active_mask(self, threshold: float = ACTIVE_UNIT_THRESHOLD) -> np.ndarray:
        """(L,) bool: dimension d is active when Var_x[μ_d] > threshold (Burda et al. 2016)."""
        return np.diag(self.mu_covariance()) > threshold

    def active_units(self, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
        return int(self.active_mask(threshold).sum())

    def class_counts(self) -> np.ndarray:
        """(C,) int64 rows seen per class."""
        return self.class_n.copy()

    def class_mean(self, c: int) -> np.ndarray:
        """E_x[μ | class c], shape (L,)."""
        count = self._class_rows(c)
        return self.class_sum_mu[c] / count

    def class_covariance(self, c: int) -> np.ndarray:
        """Cov_q[z | class c] = Cov_x[μ | c] + diag E_x[σ² | c], shape (L, L)."""
        count = self._class_rows(c)
        mean = self.class_sum_mu[c] / count
        cov = self.class_sum_mu_outer[c] / count - np.outer(mean, mean)
        return (cov + cov.T) / 2 + np.diag(self.class_sum_var[c] / count)

    def _require_rows(self) -> None:
        if self.n == 0:
            raise DataError("posterior statistics hold no rows; the encoded dataset was empty, check the input data")

    def _class_rows(self, c: int) -> int:
        if not 0 <= c < self.n_classes:
            raise IndexError(f"class index {c} is outside [0, {self.n_classes})")
        count = int(self.class_n[c])
        if count == 0:
            raise DataError(f"class index {c} has no rows; its moments are undefined")
        return count

    # ---------------------------------------------------------------- serialisation

    def to_bytes(self) -> bytes:
        """safetensors bytes (no pickle): arrays as tensors, shape parameters in the metadata.

        The metadata is one key holding canonical JSON, so equal statistics give equal bytes.
        """
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in _ARRAYS if name != "n"}
        arrays["n"] = np.array(self.n, dtype=np.int64)
        meta = {
            "format": _FORMAT,
            "latent_dim": self.latent_dim,
            "n_classes": self.n_classes,
            "reservoir_size": self.reservoir_size,
        }
        return safetensors.numpy.save(arrays, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes) -> PosteriorStats:
        """Inverse of `to_bytes`."""
        try:
            arrays = safetensors.numpy.load(data)
            meta = json.loads(_read_metadata(data)[_META_KEY])
        except Exception as exc:
            raise DataError(f"not a serialised PosteriorStats ({type(exc).__name__}: {exc})") from exc
        if meta.get("format") != _FORMAT or set(arrays) != set(_ARRAYS):
            raise DataError(f"not a serialised PosteriorStats (format {meta.get('format')!r}); recompute the stats")
        stats = cls.empty(meta["latent_dim"], meta["n_classes"], meta["reservoir_size"])
        for name in _ARRAYS:
            setattr(stats, name, arrays[name])
        stats.n = int(arrays["n"])
        return stats


def _read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` block of a safetensors header (8-byte little-endian length, then JSON)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata: dict[str, str] = header.get("__metadata__", {})
    return metadata
