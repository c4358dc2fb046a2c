"""plan.py: shard row counts with their remainder, names, and per-shard seed sequences."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_pipeline.generation.plan import ShardSpec, plan_class_shards, plan_real_shards, plan_shards, shard_name


@pytest.mark.parametrize(
    ("rows", "rows_per_shard", "expected"),
    [
        (5, 2, [2, 2, 1]),
        (4, 2, [2, 2]),
        (1, 10, [1]),
        (10, 10, [10]),
        (11, 10, [10, 1]),
        (3, 1, [1, 1, 1]),
        (100_000, 25_000, [25_000] * 4),
    ],
)
def test_plan_shards_counts_and_remainder(rows: int, rows_per_shard: int, expected: list[int]) -> None:
    shards = plan_shards(rows, rows_per_shard, seed=7)
    assert [s.rows for s in shards] == expected
    assert [s.index for s in shards] == list(range(len(expected)))
    assert {s.seed for s in shards} == {7}
    assert sum(s.rows for s in shards) == rows
    assert [s.start for s in shards] == [sum(expected[:i]) for i in range(len(expected))]  # rows before each


def test_plan_shards_deterministic() -> None:
    assert plan_shards(123, 10, seed=4) == plan_shards(123, 10, seed=4)
    assert plan_shards(123, 10, seed=4) != plan_shards(123, 10, seed=5)


@pytest.mark.parametrize(("rows", "rows_per_shard"), [(0, 1), (-1, 5), (5, 0), (5, -2)])
def test_plan_shards_invalid(rows: int, rows_per_shard: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        plan_shards(rows, rows_per_shard, seed=0)


@pytest.mark.parametrize(
    ("index", "name"), [(0, "part-00000.parquet"), (7, "part-00007.parquet"), (12345, "part-12345.parquet")]
)
def test_shard_name(index: int, name: str) -> None:
    assert shard_name(index) == name
    assert ShardSpec(index=index, rows=1, seed=0).name == name


def test_shard_names_sort_in_index_order() -> None:
    names = [s.name for s in plan_shards(25, 2, seed=0)]
    assert names == sorted(names)
    assert len(set(names)) == 13


@pytest.mark.parametrize("seed", [0, 3, 2**40 + 1])
def test_seed_sequence_equals_spawned_child(seed: int) -> None:
    n = 5
    children = np.random.SeedSequence(seed).spawn(n)
    for spec in plan_shards(rows=n * 3, rows_per_shard=3, seed=seed):
        ours = spec.seed_sequence().generate_state(8)
        np.testing.assert_array_equal(ours, children[spec.index].generate_state(8))


def test_seed_sequence_children_independent_of_n() -> None:
    a = np.random.SeedSequence(9).spawn(3)[2].generate_state(4)
    b = ShardSpec(index=2, rows=1, seed=9).seed_sequence().generate_state(4)
    c = np.random.SeedSequence(9).spawn(50)[2].generate_state(4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, c)


def test_seed_sequences_differ_across_shards() -> None:
    states = {tuple(s.seed_sequence().generate_state(4)) for s in plan_shards(40, 4, seed=0)}
    assert len(states) == 10


def test_shard_spec_to_json() -> None:
    expected = {"index": 2, "rows": 50, "seed": 1, "start": 100, "class_rows": (), "source": "synthetic"}
    assert ShardSpec(index=2, rows=50, seed=1, start=100).to_json() == expected
    spec = ShardSpec(index=2, rows=5, seed=1, class_rows=(2, 3))
    assert ShardSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_class_shards_carry_exact_quotas() -> None:
    specs = plan_class_shards([5, 0, 7, 3], rows_per_shard=4, seed=1)

    assert [spec.class_rows for spec in specs] == [(4, 0, 0, 0), (1, 0, 3, 0), (0, 0, 4, 0), (0, 0, 0, 3)]
    assert [sum(column) for column in zip(*(spec.class_rows for spec in specs), strict=True)] == [5, 0, 7, 3]
    assert all(sum(spec.class_rows) == spec.rows for spec in specs)


def test_real_shards_copy_the_input_in_order_after_the_synthetic_ones() -> None:
    specs = plan_real_shards(10, rows_per_shard=4, first_index=4)

    assert [(spec.index, spec.start, spec.rows) for spec in specs] == [(4, 0, 4), (5, 4, 4), (6, 8, 2)]
    assert specs[1].name == "real-000000000004.parquet" and specs[0].source == "real"
