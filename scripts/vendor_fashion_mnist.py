"""Write data/fashion-mnist-slice.parquet: a seeded, class-balanced slice of Fashion-MNIST's 10k test split.

Needs the Debian package (`make bench-install`). The slice comes from the test split only, so all 60,000 training
images stay a clean benchmark training set that the shipped file never overlaps. Rows are drawn per class with a
fixed seed and shuffled together; the file is written with fixed options, so a rerun gives the same bytes (with the
same pyarrow, whose version is in the file's footer).

    .venv/bin/python scripts/vendor_fashion_mnist.py [--per-class 300] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from vae_pipeline import storage
from vae_pipeline.fashion_mnist import (
    CLASS_NAMES,
    SLICE_PATH,
    fashion_mnist_table,
    load_fashion_mnist,
    stratified_indices,
)

COMPRESSION_LEVEL = 19  # zstd's slowest below the "ultra" levels: a one-off write, for a small committed file


def slice_bytes(per_class: int, seed: int) -> tuple[bytes, pa.Table]:
    """The slice's Parquet bytes and its table."""
    images, labels = load_fashion_mnist("test")
    rows = stratified_indices(labels, per_class, seed)
    table = fashion_mnist_table(images[rows], labels[rows])
    sink = pa.BufferOutputStream()
    # One row group: the whole slice is read at once; no statistics on the image column (they would be noise).
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=COMPRESSION_LEVEL,
        row_group_size=table.num_rows,
        write_statistics=["label"],
    )
    return sink.getvalue().to_pybytes(), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300, help="images of each of the 10 classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=SLICE_PATH, help="where to write the Parquet file")
    args = parser.parse_args()
    payload, table = slice_bytes(args.per_class, args.seed)
    storage.atomic_write(args.out, payload)
    labels = table.column("label").to_pylist()
    print(f"{args.out}: {table.num_rows} rows, {len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()}")
    print("class counts: " + ", ".join(f"{name} {labels.count(name)}" for name in CLASS_NAMES))


if __name__ == "__main__":
    main()
