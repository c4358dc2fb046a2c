"""Reversible column transforms: Arrow rows <-> the float32 matrix the VAE models."""

from vae_pipeline.transforms.base import ColumnTransform
from vae_pipeline.transforms.categorical import CategoricalColumn
from vae_pipeline.transforms.continuous import ContinuousColumn
from vae_pipeline.transforms.table import COLUMN_TRANSFORMS, TableTransform

__all__ = ["COLUMN_TRANSFORMS", "CategoricalColumn", "ColumnTransform", "ContinuousColumn", "TableTransform"]
