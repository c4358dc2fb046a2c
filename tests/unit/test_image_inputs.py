"""image_inputs.py through data.py: encoded, Hugging Face, Ray tensor and .npz images become canonical columns."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from vae_pipeline import steps
from vae_pipeline.config import DataConfig
from vae_pipeline.data import TableSource, open_source
from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import image_array, image_type, image_values
from vae_pipeline.image_inputs import decode_image, image_layout, plan_images

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Ten real 8x8 handwritten digits, 0..16 scaled to uint8 0..255: (10, 8, 8)."""
    images = load_digits().images[:10]
    return np.round(images * 255 / 16).astype(np.uint8)


def _encode(pixels: np.ndarray, image_format: str = "PNG", mode: str | None = None) -> bytes:
    """(H, W) or (H, W, C) uint8 -> encoded file bytes, converted to `mode` first if given."""
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    # JPEG: full-resolution colour (no 4:2:0 subsampling), else 8x8 digits lose most of their colour
    options = {"quality": 95, "subsampling": 0} if image_format == "JPEG" else {}
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _write(path: Path, **columns: Any) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def _read(source: TableSource, batch_rows: int = 65_536) -> pa.Table:
    return pa.Table.from_batches(list(source.batches(batch_rows)), schema=source.schema)


def _save_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


# ------------------------------------------------------------------ encoded bytes


@pytest.mark.parametrize("binary_type", [pa.binary(), pa.large_binary()])
def test_png_column_becomes_canonical_in_every_batch(tmp_path: Path, digits: np.ndarray, binary_type: Any) -> None:
    images = digits[:5]
    url = _write(tmp_path / "t.parquet", img=pa.array([_encode(i) for i in images], binary_type), y=list(range(5)))
    source = open_source(DataConfig(input_url=url))
    assert source.schema.field("img").type == image_type((1, 8, 8))
    batches = list(source.batches(2))  # 5 rows in batches of 2: the remainder batch converts too
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert all(b.schema == source.schema for b in batches)
    table = pa.Table.from_batches(batches)
    np.testing.assert_array_equal(image_values(table.column("img")), images[:, None])
    assert table.column("y").to_pylist() == list(range(5))


def test_jpeg_rgb_column(tmp_path: Path, digits: np.ndarray) -> None:
    rgb = np.stack([digits, 255 - digits, digits // 2], axis=-1)  # (10, 8, 8, 3)
    url = _write(tmp_path / "t.parquet", img=pa.array([_encode(i, "JPEG") for i in rgb]))
    table = _read(open_source(DataConfig(input_url=url)))
    assert table.schema.field("img").type == image_type((3, 8, 8))
    values = image_values(table.column("img")).astype(int)
    assert np.abs(values - rgb.transpose(0, 3, 1, 2)).mean() < 4  # lossy, but the same pictures


def test_hugging_face_struct_column(tmp_path: Path, digits: np.ndarray) -> None:
    rows = [{"bytes": _encode(image), "path": f"{i}.png"} for i, image in enumerate(digits)]
    url = _write(tmp_path / "t.parquet", image=pa.array(rows, HF_IMAGE), label=list(range(10)))
    source = open_source(DataConfig(input_url=url, label_column="label"))
    assert image_layout(pq.read_schema(url).field("image")) == "huggingface"
    assert source.schema.field("image").type == image_type((1, 8, 8))
    np.testing.assert_array_equal(image_values(_read(source, 3).column("image")), digits[:, None])


def _palette(gray: bool, transparent: bool) -> Image.Image:
    image = Image.new("P", (4, 4))
    image.putdata(list(range(16)))
    image.putpalette([v for i in range(256) for v in ((i, i, i) if gray else (i, 255 - i, 0))])
    if transparent:
        image.info["transparency"] = 0
    return image


@pytest.mark.parametrize(
    ("image", "channels"),
    [
        (Image.new("L", (5, 4), 7), 1),
        (Image.new("RGB", (5, 4), (1, 2, 3)), 3),
        (Image.new("RGBA", (5, 4), (1, 2, 3, 4)), 4),
        (Image.new("LA", (5, 4), (9, 10)), 4),
        (Image.new("CMYK", (5, 4)), 3),
        (_palette(gray=True, transparent=False), 1),
        (_palette(gray=False, transparent=False), 3),
        (_palette(gray=True, transparent=True), 4),
    ],
    ids=["L", "RGB", "RGBA", "LA", "CMYK", "P-gray", "P-color", "P-transparent"],
)
def test_modes_decode_to_their_channels(image: Image.Image, channels: int) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if image.mode == "CMYK" else "PNG")
    pixels = decode_image(buffer.getvalue(), "img", "row 0")
    assert pixels.dtype == np.uint8
    assert pixels.shape == (channels, image.height, image.width)


def test_16_bit_images_are_refused() -> None:
    wide = _encode(np.array([[0, 1000, 65535]], dtype=np.uint16))
    with pytest.raises(DataError, match=r"column 'img' row 7 is a I;16 image, more than 8 bits per pixel; save"):
        decode_image(wide, "img", "row 7")


def test_exact_pixels_of_gray_palette_and_bilevel_images() -> None:
    palette = io.BytesIO()
    _palette(gray=True, transparent=False).save(palette, format="PNG")
    np.testing.assert_array_equal(decode_image(palette.getvalue(), "img", "")[0], np.arange(16).reshape(4, 4))
    bilevel = _encode(np.array([[0, 255], [255, 0]], dtype=np.uint8), mode="1")
    np.testing.assert_array_equal(decode_image(bilevel, "img", "")[0], [[0, 255], [255, 0]])  # not 0 and 1


# ------------------------------------------------------------------ bad encoded columns


def test_two_shapes_name_both_rows_in_the_table(tmp_path: Path, digits: np.ndarray) -> None:
    encoded = [_encode(i) for i in digits[:5]]
    encoded[3] = _encode(np.zeros((9, 9), np.uint8))
    source = open_source(DataConfig(input_url=_write(tmp_path / "t.parquet", img=encoded)))
    message = r"image column 'img' holds images of two shapes: \(1, 8, 8\) at row 0 and \(1, 9, 9\) at row 3; resize"
    with pytest.raises(DataError, match=message):
        _read(source, 2)  # row 3 is the second row of the second batch


def test_undecodable_bytes_name_the_row_in_the_table(tmp_path: Path, digits: np.ndarray) -> None:
    encoded = [_encode(i) for i in digits[:5]]
    encoded[3] = b"not an image"
    source = open_source(DataConfig(input_url=_write(tmp_path / "t.parquet", img=encoded)))
    with pytest.raises(
        DataError, match=r"column 'img' row 3 cannot be decoded as an image \(not a PNG, JPEG .*data\.drop_columns"
    ):
        _read(source, 2)


def test_binary_column_that_holds_no_images(tmp_path: Path) -> None:
    url = _write(tmp_path / "t.parquet", x=[1.0, 2.0], blob=[b"\x00\x01", b"\x02"])
    with pytest.raises(DataError, match=r"column 'blob' row 0 cannot be decoded.*add it to data\.drop_columns"):
        open_source(DataConfig(input_url=url))
    assert open_source(DataConfig(input_url=url, drop_columns=["blob"])).columns == ["x"]


def test_null_images(tmp_path: Path, digits: np.ndarray) -> None:
    encoded: list[bytes | None] = [_encode(i) for i in digits[:5]]
    encoded[2] = encoded[4] = None
    source = open_source(DataConfig(input_url=_write(tmp_path / "t.parquet", img=encoded)))
    with pytest.raises(DataError, match=r"image column 'img' has 2 null images in this batch, the first at row 2"):
        _read(source)


def test_hugging_face_row_with_only_a_path(tmp_path: Path, digits: np.ndarray) -> None:
    rows = [{"bytes": _encode(digits[0]), "path": "a.png"}, {"bytes": None, "path": "b.png"}]
    source = open_source(DataConfig(input_url=_write(tmp_path / "t.parquet", image=pa.array(rows, HF_IMAGE))))
    with pytest.raises(DataError, match=r"1 null images.*row 1 holds only the path 'b\.png'"):
        _read(source)


def test_rows_of_chunked_batches_under_ray(digits: np.ndarray) -> None:
    """Ray hands over tables of several chunks and no row offset: errors count rows across the chunks."""
    encoded = [_encode(i) for i in digits[:4]]
    table = pa.table({"img": pa.chunked_array([encoded[:2], [encoded[2], b"broken"]])})
    conversion = plan_images(table.schema, pa_ds.dataset(table))
    with pytest.raises(DataError, match=r"column 'img' row 3 of a batch read by Ray Data cannot be decoded"):
        conversion.convert(table)
    converted = conversion.convert(table.slice(0, 3))
    assert converted.column("img").num_chunks == 2
    np.testing.assert_array_equal(image_values(converted.column("img")), digits[:3, None])


def test_all_null_encoded_column(tmp_path: Path) -> None:
    url = _write(tmp_path / "t.parquet", x=[1.0, 2.0], img=pa.array([None, None], pa.binary()))
    with pytest.raises(DataError, match=r"column 'img' is all null; add it to data\.drop_columns"):
        open_source(DataConfig(input_url=url))


# ------------------------------------------------------------------ canonical and Ray tensors


def test_canonical_column_is_taken_as_it_is(tmp_path: Path, digits: np.ndarray) -> None:
    images = digits.astype(np.float32)[:, None] / 255
    url = _write(tmp_path / "t.parquet", image=image_array(images), y=list(range(10)))
    source = open_source(DataConfig(input_url=url))
    assert source.images.columns == ()
    assert source.schema.field("image").type == image_type((1, 8, 8), pa.float32())
    np.testing.assert_array_equal(image_values(_read(source, 4).column("image")), images)


def _tensor(values: np.ndarray) -> pa.ExtensionArray:
    shape = list(values.shape[1:])
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), int(np.prod(shape)))
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(storage.type.value_type, shape), storage)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((3, 1, 8, 8), np.int16), r"image column 'img' has int16 values; cast the images to uint8 or float32"),
        (np.zeros((3, 1, 8, 8), np.float64), r"image column 'img' has double values; cast the images to uint8"),
        (np.zeros((3, 8, 8), np.uint8), r"'img' holds 2-d tensors of shape \(8, 8\).*store them as \(1, 8, 8\)"),
        (np.zeros((3, 1, 1, 8, 8), np.uint8), r"column 'img' holds tensors of shape \(1, 1, 8, 8\), not 3-d"),
    ],
    ids=["int16", "float64", "2d", "4d"],
)
def test_bad_tensor_columns(tmp_path: Path, values: np.ndarray, message: str) -> None:
    url = _write(tmp_path / "t.parquet", img=_tensor(values), x=[1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=message):
        open_source(DataConfig(input_url=url))


def test_more_than_one_image_column(tmp_path: Path, digits: np.ndarray) -> None:
    url = _write(tmp_path / "t.parquet", a=image_array(digits[:, None]), b=[_encode(i) for i in digits])
    message = (
        r"tables with more than one image column are not supported yet \(columns a, b\); "
        r"drop one with data\.drop_columns"
    )
    with pytest.raises(DataError, match=message):
        open_source(DataConfig(input_url=url))
    assert open_source(DataConfig(input_url=url, drop_columns=["b"])).columns == ["a"]


def test_ray_tensor_read_without_ray_is_converted(digits: np.ndarray) -> None:
    """What pyarrow sees of Ray Data's tensor type when Ray is not imported: a list column with metadata."""
    metadata = {b"ARROW:extension:name": b"ray.data.arrow_tensor_v2", b"ARROW:extension:metadata": b"[1, 8, 8]"}
    field = pa.field("img", pa.large_list(pa.uint8()), metadata=metadata)
    values = pa.array(list(digits.reshape(10, 64)), pa.large_list(pa.uint8()))
    table = pa.Table.from_arrays([values], schema=pa.schema([field]))
    conversion = plan_images(table.schema, pa_ds.dataset(table))
    assert conversion.output_schema(table.schema).field("img").type == image_type((1, 8, 8))
    converted = conversion.convert(table.slice(3), first_row=3)  # a table with an offset, as Ray hands it over
    assert converted.schema.field("img").type == image_type((1, 8, 8))
    np.testing.assert_array_equal(image_values(converted.column("img")), digits[3:, None])


# ------------------------------------------------------------------ MedMNIST-style .npz


def _medmnist(path: Path, digits: np.ndarray, **overrides: np.ndarray) -> str:
    arrays = {
        "train_images": digits[:5],
        "train_labels": np.arange(5, dtype=np.uint8)[:, None],
        "val_images": digits[5:7],
        "val_labels": np.array([[5], [6]], np.uint8),
        "test_images": digits[7:],
        "test_labels": np.array([7, 8, 9]),
    }
    return _save_npz(path, **{**arrays, **overrides})


def test_medmnist_npz_round_trip(tmp_path: Path, digits: np.ndarray) -> None:
    source = open_source(DataConfig(input_url=_medmnist(tmp_path / "digits.npz", digits), label_column="label"))
    assert source.format == "npz"
    assert source.schema == pa.schema([("image", image_type((1, 8, 8))), ("label", pa.int64())])
    assert source.count_rows() == 10
    batches = list(source.batches(4))
    assert [b.num_rows for b in batches] == [4, 4, 2]
    table = pa.Table.from_batches(batches)
    np.testing.assert_array_equal(image_values(table.column("image")), digits[:, None])  # train, val, test
    assert table.column("label").to_pylist() == list(range(10))
    assert [stamp["path"] for stamp in steps.input_stamp(source.filesystem, source.files)] == list(source.files)


def test_npz_channels_last_and_explicit_format(tmp_path: Path, digits: np.ndarray) -> None:
    rgb = np.stack([digits, 255 - digits, digits // 2], axis=-1)  # (10, 8, 8, 3)
    path = tmp_path / "rgb.bin"
    with path.open("wb") as file:
        np.savez(file, train_images=rgb, train_labels=np.zeros(10, np.int32))
    table = _read(open_source(DataConfig(input_url=str(path), format="npz")))
    assert table.schema.field("image").type == image_type((3, 8, 8))
    np.testing.assert_array_equal(image_values(table.column("image")), rgb.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    ("images", "value_type"),
    [
        (np.linspace(0, 1, 640).reshape(10, 8, 8), pa.float32()),  # float64 -> float32
        (np.arange(640, dtype=np.int64).reshape(10, 8, 8) % 256, pa.uint8()),  # 0..255 stored wide -> uint8
    ],
    ids=["float64", "int64"],
)
def test_npz_value_types(tmp_path: Path, images: np.ndarray, value_type: pa.DataType) -> None:
    url = _save_npz(tmp_path / "d.npz", train_images=images, train_labels=np.zeros(10, np.int64))
    table = _read(open_source(DataConfig(input_url=url)))
    assert table.schema.field("image").type == image_type((1, 8, 8), value_type)
    np.testing.assert_allclose(image_values(table.column("image"))[:, 0], images, rtol=1e-6)


def _bad_npz(digits: np.ndarray) -> dict[str, tuple[dict[str, np.ndarray], str]]:
    labels = np.zeros(10, np.int64)
    return {
        "no-train": ({"x": digits}, r"d\.npz has arrays \['x'\], missing \['train_images', 'train_labels'\]; expected"),
        "val-only": ({"val_images": digits, "val_labels": labels}, r"missing \['train_images', 'train_labels'\]"),
        "val-without-labels": (
            {"train_images": digits, "train_labels": labels, "val_images": digits},
            r"missing \['val_labels'\]",
        ),
        "multi-label": (
            {"train_images": digits, "train_labels": np.zeros((10, 3), np.int64)},
            r"train_labels has shape \(10, 3\), 3 labels per image \(multi-label\), which is not supported",
        ),
        "label-count": ({"train_images": digits, "train_labels": labels[:9]}, r"shape \(9,\) for 10 images"),
        "float-labels": ({"train_images": digits, "train_labels": labels * 0.5}, r"labels must be integers"),
        "channels-first": (
            {"train_images": digits[:, None].repeat(8, axis=1), "train_labels": labels},
            r"train_images has shape \(10, 8, 8, 8\); images are \(N, H, W\) or channels-last",
        ),
        "wide-ints": (
            {"train_images": digits.astype(np.int32) * 4, "train_labels": labels},
            r"train_images has int32 values; save the images as uint8",
        ),
        "split-shapes": (
            {"train_images": digits, "train_labels": labels, "test_images": digits[:, :4], "test_labels": labels},
            r"train_images are \(1, 8, 8\) uint8 but test_images are \(1, 4, 8\) uint8",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no-train",
        "val-only",
        "val-without-labels",
        "multi-label",
        "label-count",
        "float-labels",
        "channels-first",
        "wide-ints",
        "split-shapes",
    ],
)
def test_bad_npz(tmp_path: Path, digits: np.ndarray, case: str) -> None:
    arrays, message = _bad_npz(digits)[case]
    with pytest.raises(DataError, match=message):
        open_source(DataConfig(input_url=_save_npz(tmp_path / "d.npz", **arrays)))


def test_files_numpy_cannot_read_as_npz(tmp_path: Path, digits: np.ndarray) -> None:
    text = tmp_path / "t.npz"
    text.write_text("not an archive")
    with pytest.raises(DataError, match=r"cannot read .*t\.npz as \.npz: .*; write it with numpy\.savez"):
        open_source(DataConfig(input_url=str(text)))
    single = tmp_path / "one.npy"
    np.save(single, digits)
    with pytest.raises(DataError, match=r"one\.npy holds one array, not an \.npz archive"):
        open_source(DataConfig(input_url=str(single), format="npz"))
    pickled = tmp_path / "p.npz"
    np.savez(pickled, train_images=np.array([{"a": 1}], dtype=object), train_labels=np.zeros(1))
    with pytest.raises(
        DataError, match=r"cannot read .*p\.npz as \.npz: Object arrays cannot be loaded when allow_pickle=False"
    ):
        open_source(DataConfig(input_url=str(pickled)))


def test_npz_input_is_one_file(tmp_path: Path, digits: np.ndarray) -> None:
    for name in ("a.npz", "b.npz"):
        _medmnist(tmp_path / name, digits)
    with pytest.raises(DataError, match=r"matches 2 files, but an \.npz input is one file"):
        open_source(DataConfig(input_url=str(tmp_path / "*.npz")))


# ------------------------------------------------------------------ Ray Data sees the same canonical batches


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray
    import ray.data

    started = not ray.is_initialized()  # a session fixture may have started one already (make test)
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True
    yield
    if started:
        ray.shutdown()


def _check_type(batch: pa.Table, expected: pa.DataType) -> pa.Table:
    """Runs in a Ray worker: the batch must carry exactly the canonical type (transforms compare types exactly)."""
    if batch.schema.field("image").type != expected:
        raise TypeError(f"map_batches saw {batch.schema.field('image').type}, not {expected}")
    return batch


def _ray_table(source: TableSource) -> pa.Table:
    import ray

    from vae_pipeline.runtime import read_dataset

    expected = source.schema.field("image").type
    checked = read_dataset(source).map_batches(_check_type, fn_kwargs={"expected": expected}, batch_format="pyarrow")
    return pa.concat_tables(ray.get(checked.to_arrow_refs()))


@pytest.mark.slow
def test_read_dataset_yields_canonical_batches(local_ray: None, tmp_path: Path, digits: np.ndarray) -> None:
    from ray.data.extensions import ArrowTensorArray

    ray_tensors = ArrowTensorArray.from_numpy(digits[:, None])  # the type Ray Data writes numpy arrays with
    inputs = {
        "canonical": _write(tmp_path / "c.parquet", image=image_array(digits[:, None]), label=list(range(10))),
        "png": _write(tmp_path / "p.parquet", image=[_encode(i) for i in digits], label=list(range(10))),
        "npz": _medmnist(tmp_path / "m.npz", digits),
        "ray": _write(tmp_path / "r.parquet", image=ray_tensors, label=list(range(10))),
    }
    for name, url in inputs.items():
        source = open_source(DataConfig(input_url=url))
        assert source.schema.field("image").type == image_type((1, 8, 8)), name
        table = _ray_table(source).sort_by("label")
        assert table.schema.field("image").type == image_type((1, 8, 8)), name
        np.testing.assert_array_equal(image_values(table.column("image")), digits[:, None], err_msg=name)
