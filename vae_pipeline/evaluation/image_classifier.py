"""The domain classifier image scores are measured with: a LeNet-size CNN trained on the real training images.

Nothing may be downloaded at run time, so there is no Inception network. The classifier learns the label when the
table has one and otherwise a self-supervised pretext task (which of four flips was applied, after RotNet: Gidaris
et al. 2018, "Unsupervised representation learning by predicting image rotations"). Its penultimate layer (84
wide, as LeNet-5's) is the feature space of `image_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 84  # LeNet-5's penultimate width
EPOCHS = 8
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
# The training budget with EPOCHS: at most 10,000 28x28 images' worth of pixels (convolution cost grows with H*W),
# so 10,000 28x28 or 1,914 64x64 images, about 12 s on one core (5,000 28x28 images: 6 s).
MAX_TRAIN_PIXELS = 10_000 * 28 * 28
PRETEXT_CLASSES = 4  # identity, horizontal flip, vertical flip, 180° rotation
_CHUNK = 256  # images per inference batch: 256 64x64 images make 67 MB of first-layer activations


@dataclass(frozen=True)
class ClassifierConfig:
    """What rebuilds the classifier: image shape, number of outputs and what they are ("label" or "pretext")."""

    channels: int
    height: int
    width: int
    outputs: int
    task: str


class ImageClassifier(nn.Module):
    """Two conv + pool blocks, adaptive pooling to 4x4 (so 8x8 and 64x64 inputs both fit), then 128 -> 84 -> out."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Sequential(
            nn.Conv2d(config.channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, H/2, W/2)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, H/4, W/4)
            nn.AdaptiveAvgPool2d(4),  # (B, 32, 4, 4)
        )  # fmt: skip
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 16, 128), nn.ReLU(), nn.Linear(128, FEATURE_DIM), nn.ReLU()
        )  # (B, 84)
        self.head = nn.Linear(FEATURE_DIM, config.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(self.conv(x)))  # (B, outputs) logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.conv(x))  # (B, FEATURE_DIM)


def train_classifier(
    images: np.ndarray, labels: np.ndarray | None, config: ClassifierConfig, *, seed: int, epochs: int = EPOCHS
) -> ImageClassifier:
    """Adam on cross-entropy, batches of 64, `epochs` passes over a seeded subsample within MAX_TRAIN_PIXELS.

    Without labels each image gets one of the four pretext transforms at random per step, and the target is which.
    Initialisation and shuffling draw from `seed` only; the global torch RNG is left as it was.
    """
    rng = np.random.default_rng(seed)
    keep = subsample(len(images), MAX_TRAIN_PIXELS // (config.height * config.width), rng)
    x = torch.from_numpy(np.ascontiguousarray(images[keep], dtype=np.float32))
    y = None if labels is None else torch.from_numpy(labels[keep].astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ImageClassifier(config)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            inputs, targets = (x[batch], y[batch]) if y is not None else _pretext(x[batch], generator)
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _pretext(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image flipped one of four ways (0 identity, 1 left-right, 2 up-down, 3 both: a 180° rotation)."""
    which = torch.randint(0, PRETEXT_CLASSES, (len(x),), generator=generator)  # (B,)
    flip_w = ((which == 1) | (which == 3)).view(-1, 1, 1, 1)
    flip_h = ((which == 2) | (which == 3)).view(-1, 1, 1, 1)
    x = torch.where(flip_w, x.flip(-1), x)
    return torch.where(flip_h, x.flip(-2), x), which


@torch.no_grad()
def class_outputs(model: ImageClassifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 84) float64, predicted class (N,)) in batches."""
    feats, preds = [], []
    for start in range(0, len(images), _CHUNK):
        f = model.features(torch.from_numpy(np.ascontiguousarray(images[start : start + _CHUNK], np.float32)))
        feats.append(f.double().numpy())
        preds.append(model.head(f).argmax(1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def load_classifier(data: bytes, config: dict[str, Any]) -> ImageClassifier:
    """Rebuild a classifier from `ImageReference.classifier_bytes()` and `classifier_config()`."""
    model = ImageClassifier(ClassifierConfig(**config))
    model.load_state_dict(safetensors.torch.load(data))
    return model.eval()


def subsample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most `limit` of `n` items, drawn without replacement (all of them when n <= limit)."""
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))
