"""buffers.py: the shuffle buffer keeps every row once in a seeded order; rebatching cuts exact sizes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from vae_pipeline.readers.buffers import rebatch, shuffle_tables

SIZES = [4, 3, 5, 1, 2]


def tables(sizes: list[int] = SIZES) -> list[pa.Table]:
    starts = np.cumsum([0, *sizes])
    return [
        pa.table({"id": range(start, start + n), "twice": [2 * i for i in range(start, start + n)]})
        for start, n in zip(starts, sizes, strict=False)
    ]


def ids(stream: list[pa.Table]) -> list[int]:
    return [i for table in stream for i in table.column("id").to_pylist()]


@pytest.mark.parametrize("buffer_rows", [1, 2, 4, 6, 100])
def test_shuffle_is_a_seeded_permutation(buffer_rows: int) -> None:
    out = list(shuffle_tables(tables(), buffer_rows, np.random.default_rng(0)))
    assert sorted(ids(out)) == list(range(15))
    assert ids(out) == ids(list(shuffle_tables(tables(), buffer_rows, np.random.default_rng(0))))
    assert ids(out) != ids(list(shuffle_tables(tables(), buffer_rows, np.random.default_rng(1))))
    for table in out:  # rows move whole
        assert table.column("twice").to_pylist() == [2 * i for i in table.column("id").to_pylist()]


def test_a_buffer_larger_than_the_stream_permutes_it_once() -> None:
    out = list(shuffle_tables(tables(), 100, np.random.default_rng(7)))
    assert ids(out) == np.random.default_rng(7).permutation(15).tolist()


def test_the_buffer_releases_all_but_half_when_full() -> None:
    # Buffer 6: after 4+3 rows it releases 7 - 3 = 4 and keeps 3; after +5 it holds 8 and releases 5; then
    # 3+1 = 4 < 6 waits, 4+2 = 6 releases 3 and keeps 3; the end releases those 3.
    out = list(shuffle_tables(tables(), 6, np.random.default_rng(0)))
    assert [t.num_rows for t in out] == [4, 5, 3, 3]
    assert set(ids(out[:1])) <= set(range(7))  # nothing is released before it has arrived


@pytest.mark.parametrize(
    ("rows", "drop_last", "sizes"),
    [
        (4, False, [4, 4, 4, 3]),
        (4, True, [4, 4, 4]),
        (5, False, [5, 5, 5]),
        (1, False, [1] * 15),
        (16, False, [15]),
        (16, True, []),
    ],
)
def test_rebatch_sizes_and_order(rows: int, drop_last: bool, sizes: list[int]) -> None:
    out = list(
        rebatch(
            [*tables(), pa.table({"id": pa.array([], pa.int64()), "twice": pa.array([], pa.int64())})],
            rows,
            drop_last=drop_last,
        )
    )
    assert [t.num_rows for t in out] == sizes
    assert ids(out) == list(range(sum(sizes)))


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="rows must be >= 1"):
        list(rebatch(tables(), 0))
    with pytest.raises(ValueError, match="buffer_rows must be >= 1"):
        list(shuffle_tables(tables(), 0, np.random.default_rng(0)))
