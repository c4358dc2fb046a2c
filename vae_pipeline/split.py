"""Seeded, order-free row assignment: train, validation or holdout, and per-row sampling keys.

Each row's fate comes from a hash of its content and a seed, so it does not depend on file order, batch
boundaries or how Ray partitions the data: the same row lands in the same split on every worker and every rerun.
Identical rows share a split, so the holdout never holds a twin of a training row: fidelity is scored on rows the
model never saw, and the privacy baseline is measured on training rows instead (`evaluation/privacy.py`).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.config import DataConfig
from vae_pipeline.image_columns import image_values, is_image_type

_TWO_64 = float(2**64)


class Split(IntEnum):
    TRAIN = 0
    VALIDATION = 1
    HOLDOUT = 2


def row_keys(data: pa.RecordBatch | pa.Table, seed: int) -> np.ndarray:
    """A uint64 pseudo-random key per row from its content and `seed`; (B,)."""
    hash_key = f"{seed % 10**16:016d}"
    keys = np.full(data.num_rows, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in data.columns:
            for part in _canonical(column):
                hashed = pd.util.hash_array(part, hash_key=hash_key, categorize=False)
                # Order-dependent combination (as in boost::hash_combine) so swapped columns hash differently.
                keys = (keys * np.uint64(1_000_003)) ^ hashed
    return pd.util.hash_array(keys, hash_key=hash_key)


def position_keys(start: int, count: int, seed: int) -> np.ndarray:
    """A uint64 pseudo-random key per row from its position in the stream and `seed`; (count,).

    Unlike `row_keys`, identical rows get independent keys: a sample drawn by these keys treats each row as its own
    draw from the data, as the privacy baseline needs (content keys would keep or drop every copy of a row at once).
    The keys depend on the rows' order, which a table source streams deterministically.
    """
    with np.errstate(over="ignore"):
        index = np.arange(start, start + count, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        return _splitmix64(index * np.uint64(0x9E3779B97F4A7C15))


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a bijective mix of 64-bit integers."""
    with np.errstate(over="ignore"):
        z = values.copy()
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _canonical(column: pa.Array | pa.ChunkedArray) -> list[np.ndarray]:
    """Arrays that depend only on a column's values, never on batch boundaries; exact for 64-bit integers.

    (pandas' own hashing of nullable Arrow integers fills nulls with a batch-dependent value.)
    """
    kind = column.type
    if is_image_type(kind):
        return [_image_words(column)]
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_temporal(kind):
        column = column.cast(pa.int64() if kind.bit_width == 64 else pa.int32())
        kind = column.type
    if pa.types.is_boolean(kind):
        column, kind = column.cast(pa.int8()), pa.int8()
    if pa.types.is_integer(kind):
        is_null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=np.uint8)
        filled = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        bits = (
            filled.astype(np.uint64) if pa.types.is_unsigned_integer(kind) else filled.astype(np.int64).view(np.uint64)
        )
        return [bits, is_null]
    if pa.types.is_floating(kind):
        return [np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)]
    as_text = pc.fill_null(column.cast(pa.string()), "\x00<null>")
    return [np.asarray(as_text.to_numpy(zero_copy_only=False), dtype=object)]


def _image_words(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(B,) uint64 per image from its pixel bytes: the bytes as 64-bit words, folded as `row_keys` folds columns."""
    pixels = image_values(column)
    raw = np.ascontiguousarray(pixels).reshape(len(pixels), -1).view(np.uint8)
    padded = np.zeros((len(raw), -(-raw.shape[1] // 8) * 8), dtype=np.uint8)
    padded[:, : raw.shape[1]] = raw
    words = padded.view(np.uint64)  # (B, K)
    folded = np.zeros(len(raw), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(words.shape[1]):
            folded = (folded * np.uint64(1_000_003)) ^ words[:, k]
    return folded


def split_codes(data: pa.RecordBatch | pa.Table, config: DataConfig) -> np.ndarray:
    """`assign_splits` with the config's seed and fractions."""
    return assign_splits(data, config.split_seed, config.validation_fraction, config.holdout_share)


def split_uniforms(data: pa.RecordBatch | pa.Table, seed: int) -> np.ndarray:
    """The number in [0, 1) that places each row: holdout below the holdout share, then validation; (B,)."""
    return row_keys(data, seed).astype(np.float64) / _TWO_64


def assign_splits(
    data: pa.RecordBatch | pa.Table, seed: int, validation_fraction: float, holdout_fraction: float
) -> np.ndarray:
    """Split code per row (`Split` values), with the given expected shares; (B,) int8."""
    uniform = split_uniforms(data, seed)
    codes = np.full(len(uniform), Split.TRAIN, dtype=np.int8)
    codes[uniform < holdout_fraction + validation_fraction] = Split.VALIDATION
    codes[uniform < holdout_fraction] = Split.HOLDOUT
    return codes
