"""Stream operations on Arrow tables: a seeded shuffle buffer, and cutting a stream into fixed-size batches.

Both work on whole tables (`take`, `slice`), never row by row in Python, and keep every row exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa


def shuffle_tables(tables: Iterable[pa.Table], buffer_rows: int, rng: np.random.Generator) -> Iterator[pa.Table]:
    """Rows of `tables` in a seeded random order, mixed within a window of at least `buffer_rows` rows.

    Rows collect in a buffer; once it holds `buffer_rows` or more, it is permuted, and all but `buffer_rows // 2`
    of them are released, the rest staying to mix with the rows that come next. Releasing half the buffer at a
    time keeps the cost per row constant (a release per incoming row would re-take the whole buffer each time).
    At the end of the stream what is left is released permuted. The output is a permutation of the input.
    """
    if buffer_rows < 1:
        raise ValueError(f"buffer_rows must be >= 1, got {buffer_rows}")
    pending: list[pa.Table] = []
    buffered = 0
    for table in tables:
        pending.append(table)
        buffered += table.num_rows
        if buffered < buffer_rows:
            continue
        merged = pa.concat_tables(pending)
        order = rng.permutation(buffered)
        keep = buffer_rows // 2
        yield merged.take(order[: buffered - keep])
        pending, buffered = [merged.take(order[buffered - keep :])], keep
    if buffered:
        yield pa.concat_tables(pending).take(rng.permutation(buffered))


def rebatch(tables: Iterable[pa.Table], rows: int, *, drop_last: bool = False) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows, in stream order; the last may be shorter unless `drop_last`."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    pending: list[pa.Table] = []
    buffered = 0
    for table in tables:
        if not table.num_rows:
            continue
        pending.append(table)
        buffered += table.num_rows
        if buffered < rows:
            continue
        merged = pa.concat_tables(pending)
        full = buffered - buffered % rows
        for start in range(0, full, rows):
            yield merged.slice(start, rows)
        pending, buffered = [merged.slice(full)], buffered - full
    if buffered and not drop_last:
        yield pa.concat_tables(pending)
