"""The generated output is read unchanged by pyarrow, pandas, Ray Data, our torch dataset and Ray Train workers.

One generation (a copy of the session's 3000 rows in 3 shards) serves every test. Beside the shards the directory
holds the files a run leaves next to them (underscore-prefixed JSON, a dot-prefixed temporary file), which every
reader must skip.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
import ray.train
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader

from tests.integration.conftest import Generated
from vae_pipeline.generation.manifest import Manifest, read_manifest, schema_json
from vae_pipeline.readers import SyntheticDataset

# A process that has run a Prefect flow (the suite does, earlier) cannot fork DataLoader workers: they exit
# at start, even for a trivial dataset. Fresh worker processes also show the dataset pickles.
WORKERS_START = "forkserver"

pytestmark = pytest.mark.slow

Row = tuple[Any, ...]


@pytest.fixture(scope="module")
def output(generated: Generated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = generated.copy_to(tmp_path_factory.mktemp("readers") / "synthetic")
    _add_run_side_files(directory)
    return directory


def _add_run_side_files(directory: Path) -> None:
    """What a run may leave beside its shards (those the job does not write yet): none of it is data."""
    run_file = directory / "_run.json"
    if not run_file.exists():
        run_file.write_text('{"state": "committed"}\n')
    sidecars = directory / "_shards"
    sidecars.mkdir(exist_ok=True)
    if not any(sidecars.iterdir()):
        (sidecars / "part-00000.json").write_text('{"rows": 1000}\n')
    (directory / ".part-00001.parquet.0123abcd.tmp").write_bytes(b"not parquet: an interrupted write")


@pytest.fixture(scope="module")
def manifest(output: Path) -> Manifest:
    found = read_manifest(str(output))
    assert found is not None
    assert (found.rows, len(found.shards)) == (3000, 3)
    return found


@pytest.fixture(scope="module")
def committed(output: Path, manifest: Manifest) -> pa.Table:
    """The rows the manifest commits, read shard by shard in manifest order."""
    return pa.concat_tables([pq.read_table(output / shard.name) for shard in manifest.shards])


def rows_of(table: pa.Table) -> Counter[Row]:
    return Counter(tuple(row.values()) for row in table.to_pylist())


def test_pyarrow_dataset_reads_the_directory(output: Path, manifest: Manifest, committed: pa.Table) -> None:
    dataset = pa_ds.dataset(str(output), format="parquet")
    assert sorted(Path(f).name for f in dataset.files) == [shard.name for shard in manifest.shards]
    table = dataset.to_table()
    assert table.num_rows == manifest.rows
    assert schema_json(table.schema) == manifest.schema
    assert table.equals(committed)


def test_pandas_reads_the_directory(output: Path, manifest: Manifest, committed: pa.Table) -> None:
    frame = pd.read_parquet(output)
    assert len(frame) == manifest.rows
    assert list(frame.columns) == [column["name"] for column in manifest.schema]
    pd.testing.assert_frame_equal(frame, committed.to_pandas())


def test_ray_data_reads_the_directory(output: Path, manifest: Manifest, committed: pa.Table) -> None:
    dataset = ray.data.read_parquet(str(output))
    assert dataset.count() == manifest.rows
    schema = dataset.schema()
    assert list(schema.names) == [column["name"] for column in manifest.schema]
    assert [str(kind) for kind in schema.types] == [column["type"] for column in manifest.schema]
    table = pa.concat_tables(ray.get(dataset.to_arrow_refs()))
    assert rows_of(table) == rows_of(committed)


def test_torch_dataset_through_a_dataloader_reads_every_row_once(output: Path, committed: pa.Table) -> None:
    dataset = SyntheticDataset(str(output), shuffle=True, seed=0, verify_checksums=True)
    assert (dataset.rows, dataset.rank_rows) == (3000, 3000)
    rows = [
        tuple(row.values())
        for row in DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context=WORKERS_START)
    ]
    assert len(rows) == 3000
    assert Counter(rows) == rows_of(committed)


def test_torch_dataset_batches_match_the_columns(output: Path, committed: pa.Table) -> None:
    dataset = SyntheticDataset(str(output), batch_size=256, columns=["species", "body_mass_g", "year"])
    batches = list(DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context=WORKERS_START))
    # 1500 rows per worker, 5 full batches and 220 rows each; the loader alternates between the workers.
    assert [len(batch["year"]) for batch in batches] == [256] * 10 + [220, 220]
    assert all(isinstance(batch["species"], list) and batch["year"].dtype == torch.float64 for batch in batches)
    mass = torch.cat([batch["body_mass_g"] for batch in batches])
    assert int(mass.isnan().sum()) == committed.column("body_mass_g").null_count
    assert float(mass.nansum()) == float(committed.column("body_mass_g").to_pandas().sum())


def read_on_train_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker: build the dataset with no rank given, and write what it read to a file."""
    from unittest import mock

    import torch.distributed as dist

    from vae_pipeline.readers import SyntheticDataset

    context = ray.train.get_context()
    from_process_group = SyntheticDataset(config["url"])
    with mock.patch.object(dist, "is_initialized", return_value=False):  # the Ray Train context alone
        dataset = SyntheticDataset(config["url"], shuffle=True, seed=3)
    record = {
        "context": [context.get_world_rank(), context.get_world_size()],
        "process_group": [from_process_group.rank, from_process_group.world_size],
        "ray_train": [dataset.rank, dataset.world_size],
        "rows": [list(row.values()) for row in dataset],
    }
    path = Path(config["out"]) / f"rank-{context.get_world_rank()}.json"
    path.write_text(json.dumps(record))


def test_ray_train_workers_split_the_rows(output: Path, committed: pa.Table, tmp_path: Path) -> None:
    _wait_for_free_cpus(2)
    trainer = TorchTrainer(
        read_on_train_worker,
        train_loop_config={"url": str(output), "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(name="readers", storage_path=str(tmp_path / "ray-results")),
    )
    trainer.fit()
    records = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(2)]
    for rank, record in enumerate(records):
        assert record["context"] == record["process_group"] == record["ray_train"] == [rank, 2]
        assert len(record["rows"]) == 1500
    seen = [Counter(tuple(row) for row in record["rows"]) for record in records]
    assert seen[0] + seen[1] == rows_of(committed)  # together every row, each exactly once


def _wait_for_free_cpus(count: int, timeout_s: float = 30.0) -> None:
    """Generation's actors are killed asynchronously; the trainer needs both CPUs of the session's Ray."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) >= count, ray.available_resources()
