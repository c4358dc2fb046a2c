"""torch_dataset.py: exact rows per consumer, order, shuffling, batching, options and damaged outputs.

The dataset has shards of 4, 3, 5, 1 and 2 rows (15 in all), and row i has id i (see datasets.py).
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
import types
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from tests.unit.readers.datasets import COLUMNS, make_table, write_dataset
from vae_pipeline import storage
from vae_pipeline.errors import ConfigError, DataError, StorageError
from vae_pipeline.generation.manifest import MANIFEST_FILE
from vae_pipeline.generation.writer import write_shard
from vae_pipeline.readers import SyntheticDataset, consumers

# A process that has run a Prefect flow (the suite does, earlier) cannot fork DataLoader workers: they exit
# at start, even for a trivial dataset. Fresh worker processes also show the dataset pickles.
WORKERS_START = "forkserver"

SIZES = (4, 3, 5, 1, 2)
ROWS = sum(SIZES)


@pytest.fixture(scope="module")
def local_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("readers") / "synthetic")
    write_dataset(url, SIZES)
    return url


@pytest.fixture(scope="module")
def memory_url() -> Iterator[str]:
    url = f"memory://readers-test/{uuid.uuid4().hex}"
    write_dataset(url, SIZES)
    yield url
    storage.remove(url)


@pytest.fixture(params=["local", "memory"])
def url(request: pytest.FixtureRequest, local_url: str, memory_url: str) -> str:
    return local_url if request.param == "local" else memory_url


def ids(items: Iterable[dict[str, Any]]) -> list[int]:
    """The ids of rows, or of the rows of batches, in the order they came."""
    found: list[int] = []
    for item in items:
        value = item["id"]
        found.extend(value.tolist() if isinstance(value, torch.Tensor) else [value])
    return found


def test_single_rows_in_manifest_order(url: str) -> None:
    rows = list(SyntheticDataset(url))
    assert ids(rows) == list(range(ROWS))
    assert rows[0] == {
        "id": 0,
        "name": None,
        "score": None,
        "f32": 0.0,
        "count": None,
        "flag": None,
        "ok": True,
        "kind": None,
    }
    assert rows[1] == {
        "id": 1,
        "name": "r1",
        "score": 0.5,
        "f32": 1.0,
        "count": 10,
        "flag": False,
        "ok": False,
        "kind": "b",
    }


def test_batches_convert_by_arrow_type(url: str) -> None:
    (batch,) = list(SyntheticDataset(url, batch_size=ROWS))
    assert list(batch) == COLUMNS
    nulls = [0, 7, 14]
    assert batch["id"].dtype == torch.int64 and batch["id"].tolist() == list(range(ROWS))  # not nullable
    assert batch["ok"].dtype == torch.bool and batch["ok"].tolist() == [i % 3 == 0 for i in range(ROWS)]
    assert batch["f32"].dtype == torch.float32
    for name, expected in (("score", [i / 2 for i in range(ROWS)]), ("count", [10.0 * i for i in range(ROWS)])):
        assert batch[name].dtype == torch.float64  # nullable integers too: NaN marks null
        assert [i for i, v in enumerate(batch[name].tolist()) if math.isnan(v)] == nulls
        assert [v for i, v in enumerate(batch[name].tolist()) if i not in nulls] == [
            v for i, v in enumerate(expected) if i not in nulls
        ]
    assert batch["flag"].dtype == torch.float64
    assert batch["flag"][1:3].tolist() == [0.0, 1.0]
    assert batch["name"] == [None if i in nulls else f"r{i}" for i in range(ROWS)]
    assert batch["kind"] == [None if i in nulls else "abc"[i % 3] for i in range(ROWS)]


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "sizes"),
    [
        (4, False, [4, 4, 4, 3]),
        (4, True, [4, 4, 4]),
        (5, False, [5, 5, 5]),
        (5, True, [5, 5, 5]),
        (20, False, [15]),
        (20, True, []),
    ],
)
def test_batch_sizes_and_remainder(local_url: str, batch_size: int, drop_last: bool, sizes: list[int]) -> None:
    batches = list(SyntheticDataset(local_url, batch_size=batch_size, drop_last=drop_last))
    assert [len(batch["id"]) for batch in batches] == sizes
    assert ids(batches) == list(range(sum(sizes)))
    assert all(len(batch["name"]) == len(batch["id"]) for batch in batches)


def test_columns_subset_in_the_given_order(url: str) -> None:
    rows = list(SyntheticDataset(url, columns=["name", "id"]))
    assert rows[:2] == [{"name": None, "id": 0}, {"name": "r1", "id": 1}]
    assert all(list(row) == ["name", "id"] for row in rows)
    (batch,) = list(SyntheticDataset(url, columns=["score"], batch_size=ROWS))
    assert list(batch) == ["score"]


def test_an_unknown_column_is_named_with_the_available_ones(url: str) -> None:
    with pytest.raises(
        ConfigError, match=r"column 'nope' is not in the dataset at .*available columns: \['id', 'name'"
    ):
        SyntheticDataset(url, columns=["id", "nope"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": "id"}, "list of names"),
        ({"columns": []}, "columns is empty"),
        ({"columns": ["id", "name", "id"]}, r"\['id'\] are given more than once"),
        ({"batch_size": 0}, "batch_size must be a positive"),
        ({"drop_last": True}, "drop_last needs batch_size"),
        ({"shuffle_buffer": 0}, "shuffle_buffer must be at least 1"),
        ({"rank": 1}, "give both"),
        ({"world_size": 2}, "give both"),
        ({"rank": 2, "world_size": 2}, r"rank 2 is not in \[0, world_size=2\)"),
        ({"rank": -1, "world_size": 2}, r"rank -1 is not in"),
    ],
)
def test_invalid_options_are_refused(local_url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SyntheticDataset(local_url, **options)


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_an_output_without_manifest_is_not_committed(tmp_path: Path, kind: str) -> None:
    url = str(tmp_path / "out") if kind == "local" else f"memory://readers-test/{uuid.uuid4().hex}"
    write_dataset(url, SIZES)
    storage.remove(storage.join_url(url, MANIFEST_FILE))  # as if generation stopped before its commit
    with pytest.raises(StorageError, match=r"holds no committed dataset \(no _manifest.json\).*generate --resume"):
        SyntheticDataset(url)
    storage.remove(url)


def test_a_changed_shard_is_caught_by_its_checksum(tmp_path: Path) -> None:
    url = str(tmp_path / "out")
    write_dataset(url, SIZES)
    assert ids(SyntheticDataset(url, verify_checksums=True)) == list(range(ROWS))
    write_shard(make_table(range(100, 105)), url, 2, "part-00002.parquet")  # same rows, other values
    assert ids(SyntheticDataset(url)) == [*range(7), *range(100, 105), 12, 13, 14]  # unverified: read as is
    with pytest.raises(DataError, match=r"shard part-00002.parquet at .* has sha256 .*generate --resume"):
        list(SyntheticDataset(url, verify_checksums=True))


def test_a_shard_with_other_row_count_is_refused_even_unverified(tmp_path: Path) -> None:
    url = str(tmp_path / "out")
    write_dataset(url, SIZES)
    write_shard(make_table(range(2)), url, 1, "part-00001.parquet")
    with pytest.raises(DataError, match=r"shard part-00001.parquet at .* has 2 rows, but the manifest lists 3"):
        list(SyntheticDataset(url))


@pytest.mark.parametrize(
    ("rank", "world_size", "equal_ranks", "expected"),
    [
        (0, 2, False, range(0, 7)),
        (1, 2, False, range(7, 15)),
        (0, 2, True, range(0, 7)),
        (1, 2, True, range(7, 14)),  # row 14 is left out so both ranks take 7
        (2, 4, False, range(7, 11)),
        (3, 4, True, range(9, 12)),
    ],
)
def test_explicit_rank_reads_its_contiguous_rows(
    url: str, rank: int, world_size: int, equal_ranks: bool, expected: range
) -> None:
    dataset = SyntheticDataset(url, rank=rank, world_size=world_size, equal_ranks=equal_ranks)
    assert ids(dataset) == list(expected)
    assert dataset.rank_rows == len(expected)
    assert dataset.rows == ROWS


def test_dataloader_workers_split_each_rank_exactly(local_url: str) -> None:
    # Rank 0 of 2 holds rows 0-6: worker 0 takes 0-2, worker 1 takes 3-6; the loader alternates between them.
    loader = DataLoader(
        SyntheticDataset(local_url, rank=0, world_size=2),
        batch_size=None,
        num_workers=2,
        multiprocessing_context=WORKERS_START,
    )
    assert ids(loader) == [0, 3, 1, 4, 2, 5, 6]
    # Batches are cut per worker: worker 0 has rows 0-6 and worker 1 rows 7-14.
    batched = DataLoader(
        SyntheticDataset(local_url, batch_size=4), batch_size=None, num_workers=2, multiprocessing_context=WORKERS_START
    )
    assert [batch["id"].tolist() for batch in batched] == [[0, 1, 2, 3], [7, 8, 9, 10], [4, 5, 6], [11, 12, 13, 14]]


@pytest.mark.parametrize("world_size", [1, 3])
def test_every_row_once_across_ranks_and_workers_while_shuffling(local_url: str, world_size: int) -> None:
    seen: dict[int, list[int]] = {}
    for epoch in (0, 1):
        for rank in range(world_size):
            dataset = SyntheticDataset(
                local_url, rank=rank, world_size=world_size, shuffle=True, shuffle_buffer=3, seed=11
            )
            dataset.set_epoch(epoch)
            got = ids(DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context=WORKERS_START))
            assert len(got) == dataset.rank_rows
            seen.setdefault(epoch, []).extend(got)
        assert sorted(seen[epoch]) == list(range(ROWS))
    assert seen[0] != seen[1]


def test_shuffle_is_a_permutation_reproducible_per_seed_and_epoch(url: str) -> None:
    dataset = SyntheticDataset(url, shuffle=True, shuffle_buffer=4, seed=3)
    first = ids(dataset)
    assert sorted(first) == list(range(ROWS)) and first != list(range(ROWS))
    assert ids(dataset) == first
    assert ids(SyntheticDataset(url, shuffle=True, shuffle_buffer=4, seed=3)) == first
    dataset.set_epoch(1)
    second = ids(dataset)
    assert dataset.epoch == 1
    assert sorted(second) == list(range(ROWS)) and second != first
    dataset.set_epoch(0)
    assert ids(dataset) == first
    assert ids(SyntheticDataset(url, shuffle=True, shuffle_buffer=4, seed=4)) != first


def test_shuffled_batches_hold_every_row_once(url: str) -> None:
    batches = list(SyntheticDataset(url, batch_size=4, shuffle=True, seed=0))
    assert [len(batch["id"]) for batch in batches] == [4, 4, 4, 3]
    assert sorted(ids(batches)) == list(range(ROWS))
    for batch in batches:  # columns stay aligned row by row after the shuffle
        assert batch["f32"].tolist() == [float(i) for i in batch["id"].tolist()]


def test_a_consumer_without_rows_warns(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vae_pipeline.readers.torch_dataset"):
        assert list(SyntheticDataset(url, rank=0, world_size=20)) == []
    assert "consumer 0 of 20 (rank 0, worker 0) gets no rows: the dataset has 15" in caplog.text


def test_the_dataset_pickles_for_spawned_workers(local_url: str) -> None:
    dataset = SyntheticDataset(local_url, shuffle=True, seed=2, batch_size=3)
    dataset.set_epoch(5)
    assert ids(pickle.loads(pickle.dumps(dataset))) == ids(dataset)


def test_rank_comes_from_torch_distributed(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumers.dist, "is_available", lambda: True)
    monkeypatch.setattr(consumers.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(consumers.dist, "get_rank", lambda: 2)
    monkeypatch.setattr(consumers.dist, "get_world_size", lambda: 3)
    dataset = SyntheticDataset(url)
    assert (dataset.rank, dataset.world_size) == (2, 3)
    assert ids(dataset) == list(range(10, 15))
    assert SyntheticDataset(url, rank=0, world_size=1).world_size == 1  # explicit values win


def _fake_ray_train(monkeypatch: pytest.MonkeyPatch, get_context: Any) -> None:
    """Install a stand-in `ray.train` whose get_context behaves as given."""
    train = types.ModuleType("ray.train")
    train.get_context = get_context  # type: ignore[attr-defined]
    ray = types.ModuleType("ray")
    ray.train = train  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.train", train)


def test_rank_comes_from_the_ray_train_context(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    context = types.SimpleNamespace(get_world_rank=lambda: 1, get_world_size=lambda: 2)
    _fake_ray_train(monkeypatch, lambda: context)
    dataset = SyntheticDataset(url)
    assert (dataset.rank, dataset.world_size) == (1, 2)
    assert ids(dataset) == list(range(7, 15))


def test_outside_ray_train_and_torch_distributed_there_is_one_rank(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def outside() -> None:
        raise RuntimeError("`get_context` cannot be used outside of a Ray Train training function.")

    _fake_ray_train(monkeypatch, outside)
    dataset = SyntheticDataset(url)
    assert (dataset.rank, dataset.world_size) == (0, 1)
    assert len(ids(dataset)) == ROWS
