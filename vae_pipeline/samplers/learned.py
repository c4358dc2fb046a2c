"""Learned second-stage priors: samplers whose fit is training, done once and stored, then loaded everywhere.

Closed-form samplers (gaussian, gmm, ...) refit from the statistics in milliseconds wherever they are used. A
learned prior (a normalizing flow, a latent diffusion model) trains for seconds to minutes, so it is fitted once
after the statistics job, its weights stored in safetensors beside the statistics with its settings and training
curve in JSON (`samplers/store.py`), and generation actors and evaluation candidates load it instead of training.

Training runs on `device` (`train_on`): a GPU when the statistics step's `priors.use_gpu` asks for one. Every random
draw of training still comes from CPU generators and moves to the device, so the seeds mean the same draws there;
the trained network comes back to the CPU, where generation actors sample from it.

The training data is the statistics' reservoir of per-row posteriors: draws z = mu + sigma * eps from the stored
training rows (with their class codes when the table has a label), a fresh eps per epoch, with a held-out share of
the rows for early stopping on the held-out latent negative log-likelihood. That choice is also what keeps a prior
from memorising its training latents: on penguins under a sharp model (beta 0.02, 8 latent dimensions, a
24-row reservoir), a diffusion prior trained 3,000 epochs kept epoch 418, where the held-out loss turned up, and its
decoded rows passed the privacy guard (DCR ratio 1.21); kept at its best loss on its own training rows instead, it
replayed them and the guard refused it (0.41; tests/integration/test_learned_priors.py).

Every random path takes the sampler's `seed`; `sample` draws only from the shard's generator, so shards stay
byte-identical.

A subclass writes `_train` (returns the training curve), `_sample`, `_log_likelihood` (or None when it has no
tractable density), and lists its weights' module in `module_`.
"""

from __future__ import annotations

import copy
import math
import numbers
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from vae_pipeline.errors import ConfigError, DataError, NotFittedError
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler

HOLDOUT_SHARE = 0.1  # reservoir rows kept out of training: the early-stopping and latent-NLL rows


@dataclass(frozen=True)
class LatentData:
    """What a learned prior trains on: the reservoir's posteriors split into training and held-out rows.

    mu, sigma: (M, L) float32 posterior means and standard deviations; classes: (M,) int64 codes or None;
    n_classes: how many classes the codes index (0 without a label); train/held: index arrays into the rows.
    """

    mu: np.ndarray
    sigma: np.ndarray
    classes: np.ndarray | None
    n_classes: int
    train: np.ndarray
    held: np.ndarray

    @classmethod
    def from_posterior(cls, posterior: AggregatePosterior, seed: int) -> LatentData:
        mu = posterior.reservoir_mu.astype(np.float32)
        if len(mu) < 20:
            raise DataError(
                f"a learned prior needs at least 20 stored posteriors to train on, but the statistics hold "
                f"{len(mu)}; raise statistics.reservoir_size or use a closed-form sampler"
            )
        labels = posterior.reservoir_labels.astype(np.int64)
        labelled = len(posterior.class_labels) > 1 and bool((labels >= 0).all())
        order = np.random.default_rng(seed).permutation(len(mu))
        held = max(2, round(HOLDOUT_SHARE * len(mu)))
        return cls(
            mu=mu,
            sigma=np.exp(0.5 * posterior.reservoir_logvar).astype(np.float32),
            classes=labels if labelled else None,
            n_classes=len(posterior.class_labels) if labelled else 0,
            train=np.sort(order[held:]),
            held=np.sort(order[:held]),
        )

    def draws(self, rows: np.ndarray, generator: torch.Generator, device: torch.device | None = None) -> torch.Tensor:
        """(len(rows), L) posterior draws z = mu + sigma * eps of the given rows, drawn on the CPU, on `device`."""
        mu, sigma = torch.from_numpy(self.mu[rows]), torch.from_numpy(self.sigma[rows])
        return (mu + sigma * torch.randn(mu.shape, generator=generator)).to(device or "cpu")

    def codes(self, rows: np.ndarray, device: torch.device | None = None) -> torch.Tensor | None:
        return None if self.classes is None else torch.from_numpy(self.classes[rows]).to(device or "cpu")


class LearnedSampler(LatentSampler):
    """A sampler whose `fit` trains a network on the reservoir (see the module docstring).

    Args:
        temperature: scales the base noise the sampler transforms (1.0: as trained).
        seed: seeds the initialisation, the held-out split, the draws and the shuffles of training.
        conditional: condition on the label (class codes), so `sample` returns classes and a class can be asked
            for; needs statistics with class labels.
    """

    kind: ClassVar[str]
    module_: nn.Module | None

    def __init__(self, temperature: float = 1.0, *, seed: int = 0, conditional: bool = False, **options: Any) -> None:
        super().__init__(temperature, **options)
        self.seed = int(seed)
        self.conditional = bool(conditional)
        self.module_ = None
        self.curve_: list[dict[str, float]] = []
        self.class_shares_: np.ndarray | None = None
        self.device = torch.device("cpu")

    def train_on(self, device: str | torch.device) -> Self:
        """Train on `device` ("cpu", "cuda", "cuda:1"); the weights come back to the CPU after `fit`."""
        self.device = torch.device(device)
        return self

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this sampler (stored in JSON beside the weights)."""
        return {"temperature": self.temperature, "seed": self.seed, "conditional": self.conditional}

    def _fit(self, posterior: AggregatePosterior) -> None:
        if self.conditional and len(posterior.class_labels) < 2:
            raise ConfigError(
                f"sampler {self.kind!r} with class conditioning needs a label; set data.label_column and rerun "
                "`vae-pipeline stats`, or turn its conditioning off"
            )
        data = LatentData.from_posterior(posterior, self.seed)
        self._set_class_shares(posterior)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.curve_ = self._train(data, posterior.latent_dim)
        if self.module_ is not None:
            self.module_.to("cpu")
        losses = [entry.get("train_loss", 0.0) for entry in self.curve_]
        if not all(math.isfinite(loss) for loss in losses):
            raise DataError(
                f"training the {self.kind} prior diverged (loss {losses[-1]}); lower its learning rate or epochs "
                "in sampler settings, or use a closed-form sampler; nothing was stored"
            )

    @classmethod
    def _positive_int(cls, name: str, value: Any, least: int = 1) -> int:
        """`value` as an int, or a one-line ConfigError naming the option when it is not an integer >= `least`."""
        if value != cls._positive_number(name, value, "integer") or value != int(value) or value < least:
            wanted = "a positive integer" if least == 1 else f"an integer of at least {least}"
            raise ConfigError(f"{cls.kind} sampler option {name} must be {wanted}; got {value!r}")
        return int(value)

    @classmethod
    def _positive_number(cls, name: str, value: Any, kind: str = "number") -> float:
        """`value` as a float, or a one-line ConfigError naming the option when it is not a finite positive number."""
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
        if not (math.isfinite(number) and number > 0):
            raise ConfigError(f"{cls.kind} sampler option {name} must be a positive {kind}; got {value!r}")
        return number

    def _set_class_shares(self, posterior: AggregatePosterior) -> None:
        if self.conditional:
            counts = np.asarray(posterior.class_counts, dtype=np.float64)
            self.class_shares_ = counts / counts.sum()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights (CPU tensors), for safetensors."""
        if self.module_ is None:
            raise NotFittedError(f"the {self.kind} sampler is not trained; call fit(posterior) or load_state")
        return {name: value.detach().cpu().contiguous() for name, value in self.module_.state_dict().items()}

    def load_state(self, posterior: AggregatePosterior, state: dict[str, torch.Tensor], curve: list[Any]) -> Self:
        """Fitted without training: the stored weights for this posterior's latent size (and classes)."""
        self.module_ = self._build(posterior.latent_dim, len(posterior.class_labels) if self.conditional else 0)
        self.module_.load_state_dict(state)
        self.module_.eval()
        self._set_class_shares(posterior)
        self.curve_ = list(curve)
        self.latent_dim_ = posterior.latent_dim
        return self

    def log_likelihood(self, posterior: AggregatePosterior) -> float | None:
        """Mean log-density of held-out reservoir draws under this prior (nats per row), or None if intractable."""
        if self.module_ is None:
            raise NotFittedError(f"the {self.kind} sampler is not trained")
        data = LatentData.from_posterior(posterior, self.seed)
        z = data.draws(data.held, torch.Generator().manual_seed(self.seed + 1))
        with torch.no_grad():
            value = self._log_likelihood(z, data.codes(data.held))
        return None if value is None else float(value.mean())

    def restricted_to(self, code: int) -> Self:
        """A copy that draws only class `code` (an augmented run's quota), sharing the trained weights."""
        if self.class_shares_ is None:
            raise ConfigError(f"the {self.kind} sampler is not class-conditional; train it with conditional: true")
        restricted = copy.copy(self)
        restricted.class_shares_ = np.eye(len(self.class_shares_))[code]
        return restricted

    def _classes(self, n: int, generator: np.random.Generator) -> np.ndarray | None:
        """Each row's class in the training shares (conditional samplers), drawn from the shard's generator."""
        if self.class_shares_ is None:
            return None
        return generator.choice(len(self.class_shares_), size=n, p=self.class_shares_).astype(np.int64)

    @abstractmethod
    def _build(self, latent_dim: int, n_classes: int) -> nn.Module:
        """A freshly initialised network for this latent size (and number of classes, 0 when unconditional)."""

    @abstractmethod
    def _train(self, data: LatentData, latent_dim: int) -> list[dict[str, float]]:
        """Train `self.module_` (built by `_build`) on `data`; one dict per epoch (train_loss, held_nll, ...)."""

    @abstractmethod
    def _log_likelihood(self, z: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor | None:
        """(N,) log p(z | class) under the trained prior, or None when it has no tractable density."""
