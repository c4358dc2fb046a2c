"""The image gallery of the evaluation report: real images above each sampler's, class by class, as PNG bytes.

One block of rows per image set, all drawn as a single mosaic per block (hundreds of small Axes would cost more
than the drawing). With labels, the columns are the classes, so a reader compares one class across samplers by
reading down a column. Reproducible like plots.py: fixed picks (a Generator(0) permutation) and no version chunk.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from vae_pipeline.errors import DataError

MAX_SAMPLERS = 12  # blocks after the real one; more would make a PNG taller than a screen is useful for
MAX_CLASSES = 10
PER_CLASS = 3  # images stacked in each class column of a block
UNLABELLED_ROWS = 2  # rows of `per_row` images in a block without labels
CELL = 0.42  # inches per image
GAP, EMPTY = 0.6, 1.0  # grey of the lines between images, of a cell with no image to show

Images = tuple[np.ndarray, np.ndarray | None]  # (N, C, H, W) values in [0, 1], and int class codes or None


def render_image_grid(
    real: Images, samplers: dict[str, Images], order: list[str], class_names: list[str] | None, per_row: int = 10
) -> bytes:
    """Real images, then each sampler's (in `order`, the first MAX_SAMPLERS), as one PNG.

    Args:
        real: the real images and their labels (None: no label column).
        samplers: each sampler's images and labels (None: that sampler gave none).
        order: sampler names in display order (rank); names not in it follow by name.
        class_names: a name per class code, for the column headings (default: the codes).
        per_row: images per row when the real images have no labels.

    C=1 is drawn in grey, C>=3 as RGB from the first three channels (C=4: alpha dropped), C=2 from the first.
    """
    shape = _check(real[0], "real", None)
    for name, (images, _) in samplers.items():
        _check(images, f"sampler {name!r}", shape)
    names = list(dict.fromkeys([n for n in order if n in samplers] + sorted(samplers)))
    shown = names[:MAX_SAMPLERS]
    blocks = [("real", real), *[(name, samplers[name]) for name in shown]]
    classes = _classes(real[1], class_names)
    if classes:
        grids = [_by_class(images, labels, len(classes)) for _, (images, labels) in blocks]
    else:
        grids = [_in_rows(images, per_row) for _, (images, _) in blocks]
    title = "Images: real, then each sampler in rank order" + ("; one column per class" if classes else "")
    if len(names) > len(shown):
        title += f" (first {MAX_SAMPLERS} of {len(names)} samplers)"
    labels_of = {name: images[1] for name, images in blocks}
    captions = [name + (" (no labels)" if classes and labels_of[name] is None else "") for name, _ in blocks]
    return _draw([_mosaic(grid, shape) for grid in grids], len(grids[0][0]), captions, classes, title)


def _check(images: np.ndarray, name: str, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise DataError(f"{name} images must be an (N, C, H, W) array, got {getattr(images, 'shape', images)}")
    if shape is not None and images.shape[1:] != shape:
        raise DataError(f"{name} images are {images.shape[1:]} but the real ones are {shape}; give one shape")
    return tuple(images.shape[1:])


def _classes(labels: np.ndarray | None, class_names: list[str] | None) -> list[str]:
    """Column headings, at most MAX_CLASSES; none without labels."""
    if labels is None:
        return []
    count = len(class_names) if class_names else int(labels.max(initial=0)) + 1
    names = class_names or [str(code) for code in range(count)]
    return [str(name) for name in names[:MAX_CLASSES]]


def _picks(n: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(n)


def _by_class(images: np.ndarray, labels: np.ndarray | None, classes: int) -> list[list[np.ndarray | None]]:
    """PER_CLASS rows by `classes` columns: column c holds images labelled c (unlabelled images: in order)."""
    order = _picks(len(images))
    if labels is None:
        flat = [images[i] for i in order[: PER_CLASS * classes]]
        return [[_at(flat, r * classes + c) for c in range(classes)] for r in range(PER_CLASS)]
    columns = [[images[i] for i in order[labels[order] == c][:PER_CLASS]] for c in range(classes)]
    return [[_at(column, r) for column in columns] for r in range(PER_CLASS)]


def _in_rows(images: np.ndarray, per_row: int) -> list[list[np.ndarray | None]]:
    flat = [images[i] for i in _picks(len(images))[: UNLABELLED_ROWS * per_row]]
    return [[_at(flat, r * per_row + c) for c in range(per_row)] for r in range(UNLABELLED_ROWS)]


def _at(items: list[np.ndarray], i: int) -> np.ndarray | None:
    return items[i] if i < len(items) else None


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1]: grey from channel 0 unless there are three channels or more."""
    pixels = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.clip(np.nan_to_num(pixels.transpose(1, 2, 0).astype(np.float32)), 0.0, 1.0)


def _mosaic(grid: list[list[np.ndarray | None]], shape: tuple[int, ...]) -> np.ndarray:
    """One (rows*(H+1)+1, cols*(W+1)+1, 3) image with a one-pixel line around every cell."""
    height, width = shape[1], shape[2]
    rows, cols = len(grid), len(grid[0])
    out = np.full((rows * (height + 1) + 1, cols * (width + 1) + 1, 3), GAP, dtype=np.float32)
    for r, row in enumerate(grid):
        for c, image in enumerate(row):
            top, left = 1 + r * (height + 1), 1 + c * (width + 1)
            out[top : top + height, left : left + width] = EMPTY if image is None else _rgb(image)
    return out


def _draw(mosaics: list[np.ndarray], cols: int, captions: list[str], classes: list[str], title: str) -> bytes:
    """Blocks stacked top to bottom at CELL inches per image, captions on the left, class names above the first."""
    block_width = cols * CELL
    heights = [block_width * m.shape[0] / m.shape[1] for m in mosaics]
    left, top, gap = 1.8, 0.8 if classes else 0.5, 0.15
    size = (max(left + block_width + 0.2, 6.0), top + sum(heights) + gap * len(mosaics) + 0.1)
    fig = Figure(figsize=size)
    fig.suptitle(title, fontsize=9, y=1 - 0.15 / size[1], va="top")
    y = size[1] - top
    for i, (mosaic, caption, height) in enumerate(zip(mosaics, captions, heights, strict=True)):
        y -= height
        ax = fig.add_axes((left / size[0], y / size[1], block_width / size[0], height / size[1]))
        ax.imshow(mosaic, interpolation="nearest", aspect="auto")
        ax.set_yticks([])
        ax.set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        if i == 0 and classes:
            step = mosaic.shape[1] / len(classes)
            ax.set_xticks((np.arange(len(classes)) + 0.5) * step - 0.5, classes, fontsize=7, rotation=30, ha="left")
            ax.xaxis.tick_top()
        y -= gap
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})  # no version chunk: reproducible bytes
    return buffer.getvalue()
