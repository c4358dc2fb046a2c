"""An image column: (C, H, W) pixels <-> one block of C*H*W floats in [0, 1], laid out as one `image` span.

uint8 pixels are divided by 255 and restored exactly (round(x * 255) of k / 255 is k); float32 pixels are scaled
by the range the profile saw, or kept as they are when they already lie in [0, 1]. The block is flat in (C, H, W)
order: the conv VAE reshapes its `image` span back to (B, C, H, W), so the transform knows nothing of models.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from vae_pipeline.image_columns import image_array, image_shape, image_values
from vae_pipeline.layout import Span
from vae_pipeline.transforms.arrow_types import ArrayLike
from vae_pipeline.transforms.base import ColumnTransform
from vae_pipeline.transforms.profile import ColumnProfile


class ImageColumn(ColumnTransform):
    """Pixels scaled to [0, 1]; `low_` and `high_` map them back to the column's own range and type."""

    kind = "image"
    fitted_attributes = ("shape_", "low_", "high_")
    scored_as: ClassVar[str | None] = "image"

    def __init__(self, column: str, arrow_type: pa.DataType) -> None:
        super().__init__(column, arrow_type)
        self.shape_: list[int] = []
        self.low_ = 0.0
        self.high_ = 1.0

    @property
    def is_uint8(self) -> bool:
        return bool(self.arrow_type.value_type == pa.uint8())

    def _fit(self, profile: ColumnProfile, seed: int) -> None:
        self.shape_ = list(image_shape(self.arrow_type))
        if self.is_uint8:
            self.low_, self.high_ = 0.0, 255.0
            return
        low, high = float(profile.minimum), float(profile.maximum)
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0  # already pixels in [0, 1]: keep them as they are
        self.low_, self.high_ = low, high if high > low else low + 1.0

    def _transform(self, array: ArrayLike) -> np.ndarray:
        pixels = image_values(array, self.column).reshape(len(array), -1).astype(np.float32)
        if self.low_:
            pixels -= np.float32(self.low_)
        return pixels / np.float32(self.high_ - self.low_)  # (B, C*H*W)

    def _inverse_transform(self, block: np.ndarray) -> pa.Array:
        pixels = np.clip(block, 0.0, 1.0).reshape(len(block), *self.shape_)  # (B, C, H, W)
        if self.is_uint8:
            return image_array(np.rint(pixels * np.float32(255.0)).astype(np.uint8))
        values = pixels.astype(np.float32) * np.float32(self.high_ - self.low_) + np.float32(self.low_)
        return image_array(values.astype(np.float32))

    def _spans(self, offset: int) -> list[Span]:
        return [Span("image", offset, offset + int(np.prod(self.shape_)), self.column)]
