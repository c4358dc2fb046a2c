"""Image columns in the transform: exact uint8 round trips, float ranges, the span layout, split keys."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import load_digits

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import image_array, image_values
from vae_pipeline.layout import Span
from vae_pipeline.split import row_keys
from vae_pipeline.transforms.table import TableTransform


@pytest.fixture(scope="module")
def digits() -> pa.Table:
    data = load_digits()
    images = np.rint(data.images[:300] * 255 / 16).astype(np.uint8)[:, None]  # (300, 1, 8, 8)
    return pa.table({"image": image_array(images), "digit": pa.array([str(d) for d in data.target[:300]])})


def fit(table: pa.Table, **data: object) -> TableTransform:
    return TableTransform.fit(table.to_batches(max_chunksize=128), table.schema, DataConfig(input_url="x", **data))


def test_uint8_images_come_back_byte_for_byte(digits: pa.Table) -> None:
    transform = fit(digits, label_column="digit")

    matrix = transform.transform(digits)
    back = transform.inverse_transform(matrix)

    assert transform.spans[0] == Span("image", 0, 64, "image")
    assert transform.image_column == "image" and transform.image_shape() == (1, 8, 8)
    assert matrix[:, :64].min() >= 0.0 and matrix[:, :64].max() <= 1.0
    assert back.schema.equals(digits.schema)
    assert np.array_equal(image_values(back.column("image")), image_values(digits.column("image")))
    assert transform.column_kinds() == {"image": "image", "digit": "categorical"}


def test_float_images_keep_their_range(digits: pa.Table) -> None:
    pixels = image_values(digits.column("image")).astype(np.float32) / np.float32(255 / 16)  # 0..16
    table = pa.table({"image": image_array(pixels)})
    transform = fit(table)

    matrix = transform.transform(table)
    back = image_values(transform.inverse_transform(matrix).column("image"))

    assert matrix.max() == pytest.approx(1.0) and matrix.min() == 0.0
    assert np.allclose(back, pixels, atol=1e-5)
    assert back.dtype == np.float32


def test_state_dict_round_trip_encodes_the_same(digits: pa.Table) -> None:
    transform = fit(digits, label_column="digit")

    restored = TableTransform.from_state_dict(transform.state_dict())

    assert np.array_equal(restored.transform(digits), transform.transform(digits))


def test_nan_pixels_are_refused() -> None:
    pixels = np.zeros((4, 1, 2, 2), dtype=np.float32)
    pixels[2, 0, 1, 1] = np.nan
    table = pa.table({"image": image_array(pixels), "x": [1.0, 2.0, 3.0, 4.0]})

    with pytest.raises(DataError, match="image column 'image' has 1 images with NaN or infinite pixels"):
        fit(table)


def test_an_image_column_cannot_be_the_label(digits: pa.Table) -> None:
    with pytest.raises(DataError, match=r"holds images, so it cannot be data\.label_column"):
        fit(digits, label_column="image")


def test_split_keys_of_images_ignore_batch_bounds_and_tell_images_apart(digits: pa.Table) -> None:
    whole = row_keys(digits, seed=7)
    parts = np.concatenate([row_keys(batch, seed=7) for batch in digits.to_batches(max_chunksize=50)])

    assert np.array_equal(whole, parts)
    pixels = image_values(digits.column("image"))
    distinct = len({p.tobytes() for p in pixels})
    assert len(set(whole.tolist())) == distinct
