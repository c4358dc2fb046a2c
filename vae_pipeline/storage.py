"""The one module that talks to fsspec: every location in the package is a URL string.

Local paths, file://, memory://, s3://, gs:// and az:// all go through here, so the rest of the package never
imports fsspec and never sees credentials: those come from the environment or fsspec's own configuration.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
from fsspec.spec import AbstractFileSystem

from vae_pipeline.errors import StorageError

# Which pip extra brings which protocol, for the "filesystem not installed" message.
_EXTRA_FOR_PROTOCOL = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
_LOCAL_PROTOCOLS = {"file", "local"}


def protocol_of(url: str) -> str:
    """The URL's scheme, "file" for plain paths."""
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """Resolve a URL to (filesystem, path inside it), with a clear error when the filesystem is missing."""
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        protocol = protocol_of(url)
        package = _EXTRA_FOR_PROTOCOL.get(protocol, f"the fsspec backend for '{protocol}'")
        raise StorageError(
            f"cannot open {redact_url(url)}: the '{protocol}' filesystem is not installed; "
            f"run `pip install 'vae-pipeline[cloud]'` (it brings {package})"
        ) from exc
    except ValueError as exc:
        raise StorageError(f"cannot open {redact_url(url)}: {exc}") from exc


def redact_url(url: str) -> str:
    """Drop any user:password@ part so credentials never reach a log or an error."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    host, sep, path = rest.partition("/")
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{sep}{path}"


def join_url(base: str, *parts: str) -> str:
    """Join path parts onto a URL with forward slashes, whatever the platform."""
    url = base.rstrip("/")
    for part in parts:
        url = posixpath.join(url, part.strip("/"))
    return url


def is_local(url: str) -> bool:
    return protocol_of(url) in _LOCAL_PROTOCOLS


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = url_to_fs(url, storage_options)
    return _guarded(url, lambda: fs.exists(path))


def list_urls(url: str, pattern: str = "*", storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sorted URLs of the files directly under `url` whose names match `pattern`; empty when it does not exist."""
    fs, path = url_to_fs(url, storage_options)
    if not _guarded(url, lambda: fs.exists(path)):
        return []
    found = _guarded(url, lambda: fs.glob(posixpath.join(path, pattern)))
    return sorted(_unstrip(url, path, match) for match in found)


def _unstrip(url: str, path: str, match: str) -> str:
    """Map a filesystem path returned by glob back to a URL in the caller's form."""
    name = posixpath.relpath(match, path)
    return join_url(url, name)


@contextmanager
def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None) -> Iterator[IO[Any]]:
    """Open a URL for reading (writes go through `atomic_write`)."""
    if "w" in mode or "a" in mode:
        raise ValueError("open_url is for reading; use atomic_write to write")
    fs, path = url_to_fs(url, storage_options)
    try:
        handle = fs.open(path, mode)
    except FileNotFoundError as exc:
        raise StorageError(f"{redact_url(url)} does not exist; check the path") from exc
    except (PermissionError, OSError) as exc:
        raise StorageError(f"cannot read {redact_url(url)}: {_describe(exc)}") from exc
    with handle:
        yield handle


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    with open_url(url, "rb", storage_options) as handle:
        data: bytes = handle.read()
    return data


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    raw = read_bytes(url, storage_options)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{redact_url(url)} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def atomic_write(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Make `data` visible at `url` whole or not at all.

    Local filesystems: write a temporary sibling and rename it over the target (rename is atomic on POSIX).
    Object stores: one PUT of the finished bytes, which the store makes visible atomically.
    """
    fs, path = url_to_fs(url, storage_options)
    parent = posixpath.dirname(path)
    try:
        if parent:
            fs.makedirs(parent, exist_ok=True)
        if is_local(url) or protocol_of(url) == "memory":
            tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        else:
            fs.pipe_file(path, data)
    except (PermissionError, OSError) as exc:
        raise StorageError(f"cannot write {redact_url(url)}: {_describe(exc)}") from exc


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    """Write canonical JSON (sorted keys, so equal content gives equal bytes)."""
    atomic_write(url, canonical_json(obj).encode(), storage_options)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"


def remove(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete a file or a directory tree if it exists."""
    fs, path = url_to_fs(url, storage_options)
    if _guarded(url, lambda: fs.exists(path)):
        _guarded(url, lambda: fs.rm(path, recursive=True))


def size_of(url: str, storage_options: dict[str, Any] | None = None) -> int:
    fs, path = url_to_fs(url, storage_options)
    return int(_guarded(url, lambda: fs.size(path)))


def sha256_of(url: str, storage_options: dict[str, Any] | None = None) -> str:
    digest = hashlib.sha256()
    with open_url(url, "rb", storage_options) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _guarded(url: str, action: Any) -> Any:
    """Run a filesystem call, turning permission and connection failures into a StorageError naming the URL."""
    try:
        return action()
    except FileNotFoundError as exc:
        raise StorageError(f"{redact_url(url)} does not exist; check the path") from exc
    except (PermissionError, OSError) as exc:
        raise StorageError(f"cannot access {redact_url(url)}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """A short reason without the exception's arguments, which may echo request headers or keys."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
