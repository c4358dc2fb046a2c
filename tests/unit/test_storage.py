"""storage.py: URLs, atomic writes, canonical JSON and the errors that name the URL (never its credentials)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from vae_pipeline import storage
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
