"""One location, one spelling: normalised URLs in configs and claims, and exclusive creation on every store."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import boto3
import pytest

from tests.conftest import S3_ENDPOINT
from tests.unit.generation.test_manifest import make_manifest
from vae_pipeline import storage
from vae_pipeline.config import parse_config
from vae_pipeline.errors import OutputExistsError
from vae_pipeline.generation import output
from vae_pipeline.generation.manifest import write_manifest


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("out//c", "out/c"),
        ("./out/c/", "out/c"),
        ("out/./c", "out/c"),
        ("file:///abs/out/c", "/abs/out/c"),
        ("file://localhost/abs/out/c", "/abs/out/c"),
        ("local:///abs//out/c/", "/abs/out/c"),
        ("//abs/out", "/abs/out"),
        ("./", "."),
        ("/", "/"),
        ("S3://bucket//prefix/", "s3://bucket/prefix"),
        ("s3a://bucket/a/./b", "s3://bucket/a/b"),
        ("gcs://bucket/a/", "gs://bucket/a"),
        ("memory:///root//x/", "memory://root/x"),
        ("data/*.parquet", "data/*.parquet"),
        ("../data/../x", "../data/../x"),  # through a symlink, data/.. need not be where it looks
        ("https://host//a/", "https://host//a/"),  # other schemes, query strings and chains pass unchanged
        ("s3://bucket/a?versionId=3", "s3://bucket/a?versionId=3"),
        ("simplecache::s3://bucket//a", "simplecache::s3://bucket//a"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert storage.normalize_url(url) == expected
    assert storage.normalize_url(expected) == expected  # a normalised URL stays as it is


def test_location_key_makes_one_place_of_relative_absolute_and_symlinked_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    spellings = ["out/c", "./out//c/", str(tmp_path / "out" / "c"), f"file://{tmp_path}/out/c", "link/c"]
    assert {storage.location_key(url) for url in spellings} == {str(tmp_path / "out" / "c")}
    assert storage.location_key("s3://b//k/") == "s3://b/k"


def test_configs_hold_normalised_locations() -> None:
    config = parse_config(
        {
            "model_url": "out//model/",
            "data": {"input_url": "./data/penguins.parquet"},
            "generation": {"output_url": "file:///srv/out//synthetic/"},
        }
    )
    assert (config.model_url, config.data.input_url, config.generation.output_url) == (
        "out/model",
        "data/penguins.parquet",
        "/srv/out/synthetic",
    )
    assert config.with_overrides({"generation.output_url": "s3://b//x/"}).generation.output_url == "s3://b/x"
    assert parse_config({}).model_url == "out/model"  # the defaults are normalised already


def test_one_output_however_its_location_is_spelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A committed run at out/c is the same run for out//c, ./out/c/, the absolute path and file:// (#10)."""
    monkeypatch.chdir(tmp_path)
    written = parse_config({"model_url": "m", "generation": {"output_url": "out/c"}})
    write_manifest("out/c", make_manifest(config=written.to_json()))
    spellings = [
        ("./m/", "out//c"),
        (str(tmp_path / "m"), "./out/c/"),
        ("m", str(tmp_path / "out" / "c")),
        (f"file://{tmp_path}/m", f"file://{tmp_path}/out/c"),
    ]
    for model_url, output_url in spellings:
        again = parse_config({"model_url": model_url, "generation": {"output_url": output_url}})
        output.check_output_free(again.generation.output_url, overwrite=False, resume=False, config=again.to_json())
    other = parse_config({"model_url": "m", "generation": {"output_url": "out//c", "seed": 9}})
    with pytest.raises(OutputExistsError, match="committed dataset of another run"):
        output.check_output_free(other.generation.output_url, overwrite=False, resume=False, config=other.to_json())


# ------------------------------------------------------------------ exclusive creation


@pytest.mark.parametrize("where", ["local", "memory"])
def test_create_exclusive_creates_once_and_never_overwrites(where: str, tmp_path: Path) -> None:
    base = str(tmp_path) if where == "local" else f"memory://exclusive-{uuid.uuid4().hex}"
    url = storage.join_url(base, "deep", "lease.json")
    assert storage.create_exclusive(url, b"first")
    assert not storage.create_exclusive(url, b"second")
    assert storage.read_bytes(url) == b"first"
    assert storage.list_urls(storage.join_url(base, "deep"), "*") == [url]  # no temporary file left


def test_create_exclusive_has_one_winner_among_racing_threads(tmp_path: Path) -> None:
    url = str(tmp_path / "lease.json")
    start, results = threading.Barrier(8), [False] * 8

    def race(index: int) -> None:
        start.wait()
        results[index] = storage.create_exclusive(url, f"writer {index}".encode())

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert storage.read_bytes(url) == f"writer {results.index(True)}".encode()


def test_create_exclusive_on_s3_is_a_conditional_put(s3_bucket: str) -> None:
    """moto answers `If-None-Match: *` with 412 PreconditionFailed as S3 does (its check is not atomic, AWS's is)."""
    url = f"s3://{s3_bucket}/out/_lease/000000000001.json"
    assert storage.create_exclusive(url, b"first")
    assert not storage.create_exclusive(url, b"second")
    assert storage.read_bytes(url) == b"first"


def test_listing_an_object_store_sees_objects_written_by_another_process(s3_bucket: str) -> None:
    """s3fs caches listings; the lease must see a file another driver created since the last look."""
    prefix = f"s3://{s3_bucket}/out/_lease"
    storage.atomic_write(f"{prefix}/000000000001.json", b"{}")
    assert [url.rsplit("/", 1)[-1] for url in storage.list_urls(prefix)] == ["000000000001.json"]
    client = boto3.client("s3", endpoint_url=S3_ENDPOINT)  # another client: s3fs's cache does not see this write
    client.put_object(Bucket=s3_bucket, Key="out/_lease/000000000002.json", Body=b"{}")
    assert [url.rsplit("/", 1)[-1] for url in storage.list_urls(prefix)] == ["000000000001.json", "000000000002.json"]
