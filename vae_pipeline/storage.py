"""The one module that talks to fsspec: every location in the package is a URL string.

Local paths, file://, memory://, s3://, gs:// and az:// all go through here, so the rest of the package never
imports fsspec and never sees credentials: those come from the environment or fsspec's own configuration.
"""

from __future__ import annotations

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


def _describe(exc: BaseException) -> str:
    """A short reason without the exception's arguments, which may echo request headers or keys."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    for name, value in os.environ.items():
        if len(value) >= 8 and any(word in name.upper() for word in _SECRET_ENV_WORDS) and value in text:
            text = text.replace(value, "***")
    return text[:200]
