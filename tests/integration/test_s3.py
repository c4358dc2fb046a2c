"""The pipeline end to end on s3:// against moto's S3 server on 127.0.0.1.

One training run per module: the input is read from the bucket, and the bundle, its checkpoints, the statistics,
the evaluation report and the shards are all written there. Credentials come only from the environment
(tests/conftest.py), and the secret must never show up in what the pipeline writes or logs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow.dataset as pa_ds
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq
import pytest

from tests.conftest import PENGUINS, S3_ACCESS_KEY, S3_PORT, S3_SECRET, create_bucket, delete_bucket
from tests.integration.conftest import QUICK_EVALUATION, tiny_config
from vae_pipeline import storage
from vae_pipeline.bundle import load_bundle
from vae_pipeline.config import PipelineConfig
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.aggregate import load_posterior

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class S3Run:
    bucket: str
    config: PipelineConfig
    model_url: str
    statistics_url: str
    report_url: str
    manifest_url: str
    log_lines: list[str]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def s3_run(ray_instance: None, s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Run]:
    """Train, compute statistics, evaluate and generate, every artifact in one bucket."""
    from vae_pipeline.evaluation.job import run_evaluation
    from vae_pipeline.generation.job import run_generation
    from vae_pipeline.posterior.job import run_statistics
    from vae_pipeline.training.job import run_training

    bucket = create_bucket()
    fsspec.filesystem("s3").put_file(PENGUINS, f"{bucket}/input/penguins.parquet")
    config = tiny_config(
        tmp_path_factory.mktemp("s3"),
        model_url=f"s3://{bucket}/model",
        data={"input_url": f"s3://{bucket}/input/penguins.parquet"},
        generation={"output_url": f"s3://{bucket}/synthetic"},
        sampler={"name": "gaussian"},
        training={"epochs": 3},  # a checkpoint per epoch goes to the bucket: these tests need where, not how good
        evaluation=QUICK_EVALUATION,
    )
    collect = _Collect()
    package = logging.getLogger("vae_pipeline")
    previous = package.level
    package.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(collect)
    try:
        model_url = run_training(config)
        statistics_url = run_statistics(config, model_url=model_url)
        report_url = run_evaluation(config, model_url=model_url, statistics_url=statistics_url)
        manifest_url = run_generation(config, model_url=model_url, statistics_url=statistics_url)
    finally:
        logging.getLogger().removeHandler(collect)
        package.setLevel(previous)
    yield S3Run(bucket, config, model_url, statistics_url, report_url, manifest_url, collect.lines)
    delete_bucket(bucket)


def _objects(bucket: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return {path: fs.cat_file(path) for path in fs.find(bucket)}


def _arrow_s3() -> pa_fs.S3FileSystem:
    """pyarrow's own S3 client, independent of s3fs, pointed at the moto server."""
    return pa_fs.S3FileSystem(
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET,
        region="us-east-1",
        scheme="http",
        endpoint_override=f"127.0.0.1:{S3_PORT}",
    )


def test_training_reads_s3_input_and_writes_bundle_and_checkpoints_there(s3_run: S3Run) -> None:
    bundle = load_bundle(s3_run.model_url)
    names = set(_objects(s3_run.bucket))

    assert s3_run.model_url == f"s3://{s3_run.bucket}/model"
    assert bundle.config.data.input_url == f"s3://{s3_run.bucket}/input/penguins.parquet"
    assert bundle.transform.schema.names == pq.read_schema(PENGUINS).names
    assert {f"{s3_run.bucket}/model/bundle.json", f"{s3_run.bucket}/model/model.safetensors"} <= names
    assert any(name.startswith(f"{s3_run.bucket}/model/checkpoints/") for name in names)


def test_statistics_and_report_are_written_to_s3(s3_run: S3Run) -> None:
    posterior = load_posterior(s3_run.statistics_url)

    assert s3_run.statistics_url.startswith(f"s3://{s3_run.bucket}/model/")
    assert posterior.model_fingerprint == load_bundle(s3_run.model_url).fingerprint
    assert s3_run.report_url.startswith(f"s3://{s3_run.bucket}/model/")
    assert storage.read_json(s3_run.report_url)["model_fingerprint"] == posterior.model_fingerprint


def test_shards_read_back_through_pyarrow_dataset(s3_run: S3Run) -> None:
    manifest = read_manifest(s3_run.config.generation.output_url)
    assert manifest is not None
    prefix = f"{s3_run.bucket}/synthetic"
    # The whole folder, as a reader would open it: pyarrow skips the _-prefixed manifest and bookkeeping files.
    dataset = pa_ds.dataset(prefix, filesystem=_arrow_s3(), format="parquet")
    objects = _objects(s3_run.bucket)

    assert s3_run.manifest_url == f"s3://{prefix}/_manifest.json"
    assert manifest.rows == 3000
    assert sorted(path.rsplit("/", 1)[1] for path in dataset.files) == [s.name for s in manifest.shards]
    assert dataset.count_rows() == manifest.rows
    assert dataset.schema.names == pq.read_schema(PENGUINS).names
    for shard in manifest.shards:
        payload = objects[f"{prefix}/{shard.name}"]
        assert hashlib.sha256(payload).hexdigest() == shard.sha256
        assert len(payload) == shard.bytes


def test_resume_on_s3_rewrites_missing_and_damaged_shards_with_the_same_bytes(s3_run: S3Run) -> None:
    from vae_pipeline.generation.job import run_generation

    output_url = f"s3://{s3_run.bucket}/resumed"
    config = s3_run.config.with_overrides({"generation.output_url": output_url})
    run_generation(config, model_url=s3_run.model_url, statistics_url=s3_run.statistics_url)
    first = read_manifest(output_url)
    assert first is not None
    before = {s.name: storage.read_bytes(storage.join_url(output_url, s.name)) for s in first.shards}
    fs = fsspec.filesystem("s3")
    fs.rm_file(f"{s3_run.bucket}/resumed/part-00000.parquet")
    fs.pipe_file(f"{s3_run.bucket}/resumed/part-00001.parquet", b"not the shard" * 100)
    fs.rm_file(f"{s3_run.bucket}/resumed/_manifest.json")

    resumed = config.with_overrides({"generation.resume": True})
    run_generation(resumed, model_url=s3_run.model_url, statistics_url=s3_run.statistics_url)
    second = read_manifest(output_url)

    assert second is not None
    assert {s.name: storage.read_bytes(storage.join_url(output_url, s.name)) for s in second.shards} == before
    assert [s.to_json() for s in second.shards] == [s.to_json() for s in first.shards]
    assert second.run_id == first.run_id


def test_no_credential_in_any_object_or_log(s3_run: S3Run) -> None:
    objects = _objects(s3_run.bucket)
    logs = "\n".join(s3_run.log_lines)

    assert len(objects) > 10
    leaked = [name for name, payload in objects.items() if S3_SECRET.encode() in payload]
    assert leaked == []
    assert [name for name, payload in objects.items() if S3_ACCESS_KEY.encode() in payload] == []
    assert f"s3://{s3_run.bucket}/model" in logs  # the capture saw the run's own log lines
    assert S3_SECRET not in logs
    assert S3_ACCESS_KEY not in logs


def test_ray_worker_logs_hold_no_credential(s3_run: S3Run) -> None:
    import ray

    node = ray._private.worker._global_node  # the local instance this session started
    assert node is not None
    logs_dir = Path(node.get_logs_dir_path())
    files = [path for path in logs_dir.rglob("*") if path.is_file()]

    assert any(path.name.startswith("worker-") for path in files)
    assert [path.name for path in files if S3_SECRET.encode() in path.read_bytes()] == []
