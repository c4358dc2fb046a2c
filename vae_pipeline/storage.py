"""The one module that talks to fsspec: every location in the package is a URL string.

Local paths, file://, memory://, s3://, gs:// and az:// all go through here, so the rest of the package never
imports fsspec and never sees credentials: those come from the environment or fsspec's own configuration.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
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
# Object stores have no directories: makedirs there would create a bucket, so a typo'd bucket name would appear.
_OBJECT_STORES = set(_EXTRA_FOR_PROTOCOL)
_FAMILY = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az"}
# Schemes that name the very same store, spelled one way in normalised URLs (abfs URLs also carry the account).
_ALIAS = {"s3a": "s3", "gcs": "gs"}
_CREDENTIAL_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an IAM role",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`",
    "az": "set AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, or sign in for DefaultAzureCredential",
}
_ENDPOINT_HINT = {"s3": "FSSPEC_S3_ENDPOINT_URL or AWS_ENDPOINT_URL"}
# The cloud clients' failures, matched by class name so that this module imports none of them (all are optional).
_NO_CREDENTIALS = frozenset(
    {
        *("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "ProfileNotFound"),  # botocore
        *("DefaultCredentialsError", "RefreshError"),  # google-auth
        *("ClientAuthenticationError", "CredentialUnavailableError"),  # azure-core, azure-identity
    }
)
_UNREACHABLE = frozenset(
    {
        *("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"),  # botocore
        *("ProxyConnectionError", "ClientConnectorError", "ServerTimeoutError"),  # botocore, aiohttp (gcsfs, adlfs)
        "ServiceRequestError",  # azure-core
    }
)
_DENIED_CODES = frozenset(
    {
        *("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"),
        *("InvalidToken", "AuthorizationHeaderMalformed", "401", "403"),
    }
)
# Environment variables whose values must never reach a message, even if a client echoes them.
_SECRET_ENV_WORDS = ("SECRET", "TOKEN", "PASSWORD", "ACCOUNT_KEY", "SAS", "CONNECTION_STRING")


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
    except ValueError as exc:  # adlfs without an account, an unknown protocol, a malformed URL
        hint = _CREDENTIAL_HINT.get(_family(url))
        raise StorageError(f"cannot open {redact_url(url)}: {_describe(exc)}" + (f"; {hint}" if hint else "")) from exc
    except Exception as exc:  # gcsfs looks its credentials up when it is built
        error = _translated(url, exc, "open")
        if error is None:
            raise
        raise error from exc


def redact_url(url: str) -> str:
    """Drop any user:password@ part so credentials never reach a log or an error."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    host, sep, path = rest.partition("/")
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{sep}{path}"


def normalize_url(url: str) -> str:
    """One spelling per location, so that a location written two ways is one output, one model, one run.

    `out//c`, `./out/c/` and `out/c` become `out/c`; `file:///abs/c` and `local:///abs/c` become `/abs/c`;
    `S3://bucket//a/` becomes `s3://bucket/a` (to S3 `a//b` is another key than `a/b`, but nobody means two places by
    it; `s3a` and `gcs` are the same stores as `s3` and `gs`). A normalised URL
    stays as it is, so the configs and run ids of runs that spelled their locations plainly do not change. Relative
    paths stay relative (an absolute one would put this machine's working directory into every config) and `..`
    stays (through a symlink, `a/b/..` need not be `a`). Other schemes (http, hdfs, ...), chained URLs
    (`simplecache::s3://...`) and URLs with a query pass unchanged.
    """
    if "::" in url or "?" in url or "#" in url:
        return url
    protocol = protocol_of(url)
    if protocol in _LOCAL_PROTOCOLS:
        path = url.split("://", 1)[1] if "://" in url else url
        if "://" in url and path.startswith("localhost/"):
            path = path.removeprefix("localhost")
        return _collapsed(path, keep_root=True)
    rest = url.split("://", 1)[1] if "://" in url else ""
    if (protocol in _OBJECT_STORES or protocol == "memory") and rest.strip("/"):
        return f"{_ALIAS.get(protocol, protocol)}://{_collapsed(rest, keep_root=False)}"
    return url


def location_key(url: str) -> str:
    """What identifies a location when two configs are compared: the normalised URL, and for a local path the real
    absolute path (so `out/c`, `/work/out/c` and a symlink to it are one place). For comparing, never for storing."""
    url = normalize_url(url)
    return os.path.realpath(url) if is_local(url) and "*" not in url else url


def _collapsed(path: str, keep_root: bool) -> str:
    """The path without empty or `.` segments and without a trailing slash; `/` stays the root."""
    segments = [part for part in path.split("/") if part not in ("", ".")]
    root = "/" if keep_root and path.startswith("/") else ""
    return root + "/".join(segments) if segments or root else "."


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
    with failures_named(url, "access"):
        return bool(fs.exists(path))


def list_urls(url: str, pattern: str = "*", storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sorted URLs of the files directly under `url` whose names match `pattern`; empty when it does not exist."""
    fs, path = url_to_fs(url, storage_options)
    with failures_named(url, "list"):
        fs.invalidate_cache(path)  # object stores cache listings: another process's new files must show
        if not fs.exists(path):
            return []
        found = fs.glob(posixpath.join(path, pattern))
    return sorted(_unstrip(url, path, match) for match in found)


def _unstrip(url: str, path: str, match: str) -> str:
    """Map a filesystem path returned by glob back to a URL in the caller's form."""
    name = posixpath.relpath(match, path)
    return join_url(url, name)


@contextmanager
def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None) -> Iterator[IO[Any]]:
    """Open a URL for reading (writes go through `atomic_write`); read failures inside the block name the URL."""
    if "w" in mode or "a" in mode:
        raise ValueError("open_url is for reading; use atomic_write to write")
    fs, path = url_to_fs(url, storage_options)
    with failures_named(url, "read"):
        handle = fs.open(path, mode)
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
    with failures_named(url, "write"):
        if protocol_of(url) in _OBJECT_STORES:
            fs.pipe_file(path, data)
            return
        if parent:
            fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)


def create_exclusive(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> bool:
    """Create `url` holding `data` unless something is there already: True if this call created it.

    Of several callers racing for one URL, exactly one gets True where the store can do this atomically: a local
    filesystem (the finished file is hard-linked into place, which fails if the name exists), S3 (a conditional
    PUT, `If-None-Match: *`), Azure (`overwrite=False`) and GCS (`ifGenerationMatch=0`, experimental in gcsfs), all
    through fsspec's `pipe_file(mode="create")`. Other fsspec filesystems check, then write: a narrow race remains.
    """
    fs, path = url_to_fs(url, storage_options)
    with failures_named(url, "write"):
        if is_local(url):
            return _link_exclusive(fs, path, data)
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            if _any_cause(exc, _conflict):  # S3: another conditional write to the same key was in flight
                return False
            raise
        return True


def _link_exclusive(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write a temporary sibling whole, then hard-link it to the name: readers never see a partial file."""
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    fs.pipe_file(tmp, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        return _create_excl(path, data)  # a filesystem without hard links (some FUSE and SMB mounts)
    finally:
        os.unlink(tmp)
    return True


def _create_excl(path: str, data: bytes) -> bool:
    """O_EXCL creation: atomic, but a reader may see the file before its bytes are all written."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return True


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    """Write canonical JSON (sorted keys, so equal content gives equal bytes)."""
    atomic_write(url, canonical_json(obj).encode(), storage_options)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"


def remove(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete a file or a directory tree if it exists."""
    fs, path = url_to_fs(url, storage_options)
    with failures_named(url, "delete"):
        if fs.exists(path):
            fs.rm(path, recursive=True)


def size_of(url: str, storage_options: dict[str, Any] | None = None) -> int:
    fs, path = url_to_fs(url, storage_options)
    with failures_named(url, "access"):
        return int(fs.size(path))


def sha256_of(url: str, storage_options: dict[str, Any] | None = None) -> str:
    digest = hashlib.sha256()
    with open_url(url, "rb", storage_options) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def failures_named(url: str, action: str) -> Iterator[None]:
    """Turn a storage failure inside the block into a one-line StorageError that names the URL and the fix.

    Missing files, refused or missing credentials and unreachable endpoints are translated; anything else (a bug,
    a DataError) passes through untouched.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        error = _translated(url, exc, action)
        if error is None:
            raise
        raise error from exc


def _translated(url: str, exc: BaseException, action: str) -> StorageError | None:
    shown, family = redact_url(url), _family(url)
    credentials = _CREDENTIAL_HINT.get(family, "set the credentials in the environment or fsspec's config")
    endpoint = _ENDPOINT_HINT.get(family, "the endpoint in fsspec's config")
    if _any_cause(exc, lambda e: _named(e, _NO_CREDENTIALS)):
        return StorageError(
            f"cannot {action} {shown}: no usable credentials ({_describe(exc)}); {credentials} "
            "(Ray workers need the same environment)"
        )
    if _any_cause(exc, lambda e: _named(e, _UNREACHABLE)):
        return StorageError(
            f"cannot {action} {shown}: the storage endpoint is unreachable ({_describe(exc)}); "
            f"check {endpoint} and the network"
        )
    if isinstance(exc, PermissionError) or _any_cause(exc, _denied):
        return StorageError(
            f"cannot {action} {shown}: access denied ({_describe(exc)}); check the credentials ({credentials}), "
            f"that they may {action} this location, and {endpoint}"
        )
    if isinstance(exc, FileNotFoundError):
        if action == "write" and family in _CREDENTIAL_HINT:
            return StorageError(f"cannot write {shown}: its bucket or container does not exist; create it first")
        return StorageError(f"{shown} does not exist; check the path")
    if isinstance(exc, OSError):
        return StorageError(f"cannot {action} {shown}: {_describe(exc)}")
    return None


def _family(url: str) -> str:
    protocol = protocol_of(url)
    return _FAMILY.get(protocol, protocol)


def _any_cause(exc: BaseException, test: Any) -> bool:
    """Whether the exception or anything it was raised from passes `test` (s3fs wraps botocore's errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if test(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _named(exc: BaseException, names: frozenset[str]) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _denied(exc: BaseException) -> bool:
    """A botocore ClientError (or alike) whose error code means the credentials were refused."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) in _DENIED_CODES or getattr(exc, "status", None) in (401, 403)


def _conflict(exc: BaseException) -> bool:
    """S3's answer to two conditional writes of one key at once (HTTP 409 ConditionalRequestConflict)."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) in ("ConditionalRequestConflict", "409")


def _describe(exc: BaseException) -> str:
    """A short reason without the exception's arguments, which may echo request headers or keys."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    for name, value in os.environ.items():
        if len(value) >= 8 and any(word in name.upper() for word in _SECRET_ENV_WORDS) and value in text:
            text = text.replace(value, "***")
    return text[:200]
