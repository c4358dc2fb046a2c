"""storage.py: URLs, atomic writes, canonical JSON, s3/gs/az, and errors that name the URL (never its credentials)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from tests.conftest import PENGUINS, S3_SECRET, free_port
from vae_pipeline import storage
from vae_pipeline.config import DataConfig
from vae_pipeline.data import open_source
from vae_pipeline.errors import StorageError


@pytest.fixture()
def memory_root() -> Iterator[str]:
    """A fresh memory:// directory, removed afterwards (the memory filesystem is process-global)."""
    root = f"memory://test-storage-{uuid.uuid4().hex}"
    yield root
    storage.remove(root)


def _tmp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


# ------------------------------------------------------------------ URL helpers


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("data/x.parquet", "file"),
        ("/abs/x", "file"),
        ("file:///abs/x", "file"),
        ("S3://b/k", "s3"),
        ("memory://a", "memory"),
    ],
)
def test_protocol_of(url: str, protocol: str) -> None:
    assert storage.protocol_of(url) == protocol


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://bucket/prefix", ("a", "b.json"), "s3://bucket/prefix/a/b.json"),
        ("s3://bucket/prefix/", ("/a/", "b.json"), "s3://bucket/prefix/a/b.json"),
        ("out/model", ("bundle.json",), "out/model/bundle.json"),
        ("memory://root", (), "memory://root"),
    ],
)
def test_join_url(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert storage.join_url(base, *parts) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://user:secret@bucket/key.parquet", "s3://bucket/key.parquet"),
        ("https://me:p%40ss@host.example/a/b", "https://host.example/a/b"),
        ("s3://bucket/key@2024.parquet", "s3://bucket/key@2024.parquet"),  # an @ in the path is not a credential
        ("gs://bucket", "gs://bucket"),
        ("local/path", "local/path"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert storage.redact_url(url) == expected


def test_url_to_fs_names_the_pip_extra_when_a_filesystem_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(url: str, **kwargs: object) -> None:
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(StorageError) as info:
        storage.url_to_fs("gs://user:hunter2@bucket/data.parquet")
    message = str(info.value)
    assert "gcsfs" in message
    assert "vae-pipeline[cloud]" in message
    assert "'gs'" in message
    assert "gs://bucket/data.parquet" in message
    assert "hunter2" not in message


def test_url_to_fs_unknown_protocol_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="nosuchproto://x"):
        storage.url_to_fs("nosuchproto://x")


# ------------------------------------------------------------------ writing


@pytest.mark.parametrize("where", ["local", "memory"])
def test_atomic_write_creates_parents_and_overwrites(where: str, tmp_path: Path, memory_root: str) -> None:
    base = str(tmp_path) if where == "local" else memory_root
    url = storage.join_url(base, "deep", "dir", "blob.bin")

    storage.atomic_write(url, b"first")
    assert storage.read_bytes(url) == b"first"
    storage.atomic_write(url, b"second, longer")

    assert storage.read_bytes(url) == b"second, longer"
    assert storage.size_of(url) == len(b"second, longer")
    assert storage.list_urls(storage.join_url(base, "deep", "dir")) == [url]  # no temporary sibling left


def test_atomic_write_local_leaves_no_temp_files(tmp_path: Path) -> None:
    for i in range(3):
        storage.atomic_write(str(tmp_path / "a.bin"), bytes([i]) * 10)
    assert (tmp_path / "a.bin").read_bytes() == bytes([2]) * 10
    assert _tmp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_write_file_url(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/x/y.txt"
    storage.atomic_write(url, b"hello")
    assert (tmp_path / "x" / "y.txt").read_bytes() == b"hello"
    assert _tmp_files(tmp_path) == []


def test_atomic_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot write"):
        storage.atomic_write(str(blocker / "child.bin"), b"x")  # parent is a file


def test_open_url_refuses_writes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="atomic_write"), storage.open_url(str(tmp_path / "a"), "wb"):
        pass


# ------------------------------------------------------------------ JSON


def test_write_json_is_canonical(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    storage.write_json(a, {"b": 1, "a": [1, 2], "c": {"z": None, "y": "é"}})
    storage.write_json(b, {"c": {"y": "é", "z": None}, "a": [1, 2], "b": 1})

    assert Path(a).read_bytes() == Path(b).read_bytes()
    expected = '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1,\n  "c": {\n    "y": "\\u00e9",\n    "z": null\n  }\n}\n'
    assert Path(a).read_text() == expected
    assert storage.read_json(a) == {"a": [1, 2], "b": 1, "c": {"y": "é", "z": None}}


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        storage.canonical_json({"x": float("nan")})


def test_read_json_invalid_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"bad\.json is not valid JSON"):
        storage.read_json(str(tmp_path / "bad.json"))


def test_json_round_trip_in_memory(memory_root: str) -> None:
    url = storage.join_url(memory_root, "m.json")
    storage.write_json(url, {"k": [1.5, "v"]})
    assert storage.read_json(url) == {"k": [1.5, "v"]}
    assert json.loads(storage.read_bytes(url)) == {"k": [1.5, "v"]}


# ------------------------------------------------------------------ listing, existence, removal, hashing


def test_list_urls_pattern_sorted_and_in_caller_form(tmp_path: Path) -> None:
    for name in ["part-00002.parquet", "part-00000.parquet", "part-00001.parquet", "_manifest.json", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    base = str(tmp_path)

    assert storage.list_urls(base, "part-*.parquet") == [
        f"{base}/part-00000.parquet",
        f"{base}/part-00001.parquet",
        f"{base}/part-00002.parquet",
    ]
    assert storage.list_urls(base, "*.json") == [f"{base}/_manifest.json"]
    assert len(storage.list_urls(base)) == 5


def test_list_urls_memory(memory_root: str) -> None:
    for name in ["b.bin", "a.bin", "c.txt"]:
        storage.atomic_write(storage.join_url(memory_root, name), b"1")
    assert storage.list_urls(memory_root, "*.bin") == [f"{memory_root}/a.bin", f"{memory_root}/b.bin"]


def test_list_urls_missing_directory_is_empty(tmp_path: Path) -> None:
    assert storage.list_urls(str(tmp_path / "nope")) == []


def test_exists_and_remove_file_and_tree(tmp_path: Path) -> None:
    file_url = str(tmp_path / "f.bin")
    tree_url = str(tmp_path / "tree")
    storage.atomic_write(file_url, b"x")
    storage.atomic_write(storage.join_url(tree_url, "a", "b.bin"), b"y")
    assert storage.exists(file_url) and storage.exists(tree_url)

    storage.remove(file_url)
    storage.remove(tree_url)
    storage.remove(str(tmp_path / "never-existed"))  # no error

    assert not storage.exists(file_url)
    assert not storage.exists(tree_url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("payload", [b"", b"abc", bytes(range(256)) * 5000])
def test_sha256_of_matches_hashlib(payload: bytes, tmp_path: Path) -> None:
    url = str(tmp_path / "blob")
    storage.atomic_write(url, payload)
    assert storage.sha256_of(url) == hashlib.sha256(payload).hexdigest()


def test_sha256_of_known_value(tmp_path: Path) -> None:
    storage.atomic_write(str(tmp_path / "abc"), b"abc")
    assert storage.sha256_of(str(tmp_path / "abc")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_open_url_missing_names_the_url(tmp_path: Path) -> None:
    url = str(tmp_path / "missing.json")
    with pytest.raises(StorageError, match=r"missing\.json does not exist"):
        storage.read_bytes(url)


def test_open_url_missing_memory_names_the_url(memory_root: str) -> None:
    url = storage.join_url(memory_root, "nothing.bin")
    with pytest.raises(StorageError) as info:
        storage.sha256_of(url)
    assert "nothing.bin" in str(info.value)


# ------------------------------------------------------------------ cloud URLs: s3 on a local moto server, gs, az


def _fresh(**options: object) -> dict[str, object]:
    """Storage options for a new filesystem instance, so it reads the environment as the test left it."""
    return {"skip_instance_cache": True, **options}


def _assert_one_line_without_secrets(message: str, *secrets: str) -> None:
    assert "\n" not in message
    for secret in (S3_SECRET, *secrets):
        assert secret not in message


def test_s3_round_trip(s3_bucket: str) -> None:
    base = f"s3://{s3_bucket}/run"
    storage.atomic_write(f"{base}/part-00001.bin", b"one")
    storage.write_json(f"{base}/_manifest.json", {"rows": 1})
    storage.atomic_write(f"{base}/part-00000.bin", b"zero")

    assert storage.list_urls(base, "part-*") == [f"{base}/part-00000.bin", f"{base}/part-00001.bin"]
    assert storage.read_json(f"{base}/_manifest.json") == {"rows": 1}
    assert storage.size_of(f"{base}/part-00000.bin") == 4
    assert storage.sha256_of(f"{base}/part-00001.bin") == hashlib.sha256(b"one").hexdigest()
    storage.remove(base)
    assert not storage.exists(f"{base}/part-00000.bin")
    assert storage.list_urls(base) == []


def test_s3_write_to_a_missing_bucket_does_not_create_it(s3_server: str) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageError) as info:
        storage.atomic_write(f"s3://{bucket}/model/bundle.json", b"{}")

    assert str(info.value) == (
        f"cannot write s3://{bucket}/model/bundle.json: its bucket or container does not exist; create it first"
    )
    assert not storage.exists(f"s3://{bucket}")


def test_s3_read_from_a_missing_bucket_names_the_url(s3_server: str) -> None:
    with pytest.raises(StorageError, match=r"^s3://no-such-bucket-x/a\.json does not exist; check the path$"):
        storage.read_json("s3://no-such-bucket-x/a.json")
    assert storage.list_urls("s3://no-such-bucket-x/out", "part-*") == []


_OPERATIONS = {
    "read": lambda url, options: storage.read_bytes(url, options),
    "write": lambda url, options: storage.atomic_write(url, b"x", options),
    "access": lambda url, options: storage.exists(url, options),
    "list": lambda url, options: storage.list_urls(url, "*", options),
}


@pytest.mark.parametrize("action", sorted(_OPERATIONS))
def test_s3_missing_credentials_name_the_url_and_the_fix(
    action: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_bucket}/data/x.parquet"
    storage.atomic_write(url, b"payload")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(StorageError) as info:
        _OPERATIONS[action](url, _fresh())

    message = str(info.value)
    assert message.startswith(f"cannot {action} {url}: no usable credentials (Unable to locate credentials); ")
    assert message.endswith(
        "; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an IAM role "
        "(Ray workers need the same environment)"
    )
    _assert_one_line_without_secrets(message)


@pytest.fixture()
def s3_auth(s3_server: str) -> Iterator[dict[str, str]]:
    """Make the moto server check signatures; yields the keys of a real IAM user created for the test."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3_server)
    user = f"user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    previous = _set_moto_auth(s3_server, "0")  # every request from now on is authenticated
    try:
        yield {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        _set_moto_auth(s3_server, previous)


def _set_moto_auth(endpoint: str, count: str) -> str:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


@pytest.mark.parametrize("wrong", ["unknown key id", "wrong secret"])
@pytest.mark.parametrize("action", ["read", "write", "access"])
def test_s3_wrong_credentials_name_the_url_never_the_secret(
    wrong: str, action: str, s3_bucket: str, s3_auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_bucket}/data/x.parquet"
    bad_secret = "wr0ng-s3cret-value-abc"
    key_id = "AKIAUNKNOWNKEYID0000" if wrong == "unknown key id" else s3_auth["id"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bad_secret)

    with pytest.raises(StorageError) as info:
        _OPERATIONS[action](url, _fresh())

    message = str(info.value)
    assert message.startswith(f"cannot {action} {url}: access denied (")
    assert message.endswith(
        "check the credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an IAM role), "
        f"that they may {action} this location, and FSSPEC_S3_ENDPOINT_URL or AWS_ENDPOINT_URL"
    )
    _assert_one_line_without_secrets(message, bad_secret, s3_auth["secret"])


def test_s3_unreachable_endpoint_fails_fast_and_names_the_endpoint_setting(s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/data/x.parquet"
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(StorageError) as info:
        storage.read_bytes(url, _fresh(endpoint_url=closed))

    message = str(info.value)
    assert time.perf_counter() - started < 30  # s3fs and botocore retry, but a refused connection is quick
    assert message.startswith(f"cannot read {url}: the storage endpoint is unreachable (Could not connect")
    assert message.endswith("check FSSPEC_S3_ENDPOINT_URL or AWS_ENDPOINT_URL and the network")
    _assert_one_line_without_secrets(message)


def test_s3_input_without_credentials_is_a_storage_error_naming_the_input(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_bucket}/input/penguins.parquet"
    storage.atomic_write(url, Path(PENGUINS).read_bytes())
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(StorageError, match=rf"^cannot list {url}: no usable credentials"):
        open_source(DataConfig(input_url=url, storage_options=_fresh()))


def test_failures_named_scrubs_secret_values_a_client_echoes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "az-key-value-12345")
    with pytest.raises(StorageError) as info, storage.failures_named("az://c/x", "read"):
        raise OSError(f"request failed: key={S3_SECRET} account_key=az-key-value-12345\nheaders: ...")

    assert str(info.value) == "cannot read az://c/x: request failed: key=*** account_key=***"


def _client_error(code: str) -> OSError:
    """What s3fs raises for an error code it does not map: an OSError caused by botocore's ClientError."""

    class ClientError(Exception):
        def __init__(self, response: dict[str, Any]) -> None:
            super().__init__("An error occurred")
            self.response = response

    wrapped = OSError(5, "denied")
    wrapped.__cause__ = ClientError({"Error": {"Code": code, "Message": "denied"}})
    return wrapped


def _named_error(name: str, message: str) -> Exception:
    return type(name, (Exception,), {})(message)


@pytest.mark.parametrize(
    ("url", "error", "expected"),
    [
        (
            "gs://b/k",
            _named_error("DefaultCredentialsError", "Your default credentials were not found."),
            "cannot read gs://b/k: no usable credentials (Your default credentials were not found.); "
            "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login` "
            "(Ray workers need the same environment)",
        ),
        (
            "abfs://c/k",
            _named_error("ClientConnectorError", "Cannot connect to host acct.blob.core.windows.net:443"),
            "cannot read abfs://c/k: the storage endpoint is unreachable (Cannot connect to host "
            "acct.blob.core.windows.net:443); check the endpoint in fsspec's config and the network",
        ),
        (
            "s3a://b/k",
            _client_error("ExpiredToken"),
            "cannot read s3a://b/k: access denied ([Errno 5] denied); check the credentials (set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an IAM role), that they may read this location, and "
            "FSSPEC_S3_ENDPOINT_URL or AWS_ENDPOINT_URL",
        ),
        ("s3://b/k", _client_error("SlowDown"), "cannot read s3://b/k: [Errno 5] denied"),
    ],
)
def test_failures_named_translates_cloud_client_errors_by_name(url: str, error: Exception, expected: str) -> None:
    with pytest.raises(StorageError) as info, storage.failures_named(url, "read"):
        raise error

    assert str(info.value) == expected


def test_failures_named_lets_other_errors_through() -> None:
    with pytest.raises(KeyError), storage.failures_named("s3://b/k", "read"):
        raise KeyError("not a storage failure")


@pytest.mark.parametrize(
    ("url", "options", "module"),
    [
        ("gs://bucket/data/x.parquet", {"token": "anon"}, "gcsfs"),
        ("gcs://bucket/data/x.parquet", {"token": "anon"}, "gcsfs"),
        ("az://container/data/x.parquet", {"account_name": "devstoreaccount1", "anon": True}, "adlfs"),
        ("abfs://container/data/x.parquet", {"account_name": "devstoreaccount1", "anon": True}, "adlfs"),
    ],
)
def test_gs_and_az_urls_resolve_through_the_cloud_extra(url: str, options: dict[str, object], module: str) -> None:
    fs, path = storage.url_to_fs(url, options)  # anonymous: builds the client without touching the network

    assert type(fs).__module__.split(".")[0] == module
    assert path == url.split("://", 1)[1]


def test_az_without_an_account_says_which_variables_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError) as info:
        storage.url_to_fs("az://container/data.parquet", _fresh())

    message = str(info.value)
    assert message.startswith("cannot open az://container/data.parquet: ")
    assert message.endswith(
        "set AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, or sign in for DefaultAzureCredential"
    )


@pytest.mark.parametrize(("protocol", "package"), [("s3", "s3fs"), ("gs", "gcsfs"), ("az", "adlfs")])
def test_an_uninstalled_filesystem_names_the_cloud_extra(
    protocol: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, protocol, raising=False)  # forget the loaded class
    url = f"{protocol}://bucket/synthetic"

    with pytest.raises(StorageError) as info:
        storage.list_urls(url, "part-*", _fresh())

    assert str(info.value) == (
        f"cannot open {url}: the '{protocol}' filesystem is not installed; "
        f"run `pip install 'vae-pipeline[cloud]'` (it brings {package})"
    )
