"""One small storage API for ``s3://bucket/key`` URIs and local paths.

Every stage reads and writes through these functions, so a run behaves the same against AWS S3,
MinIO/Ceph, the moto server used by the tests, or a local directory (``--local``).

Guarantees:

- Writes are atomic for readers: an object/file is either absent or complete. Locally we write a
  hidden temporary file in the same directory and ``os.replace`` it; on S3 a PutObject or a
  completed multipart upload is the only way an object becomes visible.
- S3 calls retry with bounded backoff (botocore ``standard``/``adaptive`` modes); streaming reads
  resume from the last byte after a dropped connection.
- Permanent failures raise :class:`~dynamics.errors.StorageError` with one message naming the URI
  and the fix; credential values never appear in messages.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Literal

import numpy as np
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from dynamics import constants as C
from dynamics.errors import StorageError
from dynamics.storage_errors import (
    NOT_FOUND_CODES,
    S3_SCHEME,
    no_such_bucket,
    not_found,
    os_error,
    os_errors,
    s3_error,
    s3_errors,
)

FILE_SCHEME = "file://"
DEFAULT_REGION = "us-east-1"
MiB = 1024 * 1024

# Our local temporaries look like ".<name>.tmp-<hex>"; list_uris hides them so a reader never
# mistakes a half-written file for an artifact.
_TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")

# Errors a streaming GetObject body can raise mid-read; they are transient, so we resume.
_STREAM_ERRORS = (ResponseStreamingError, ReadTimeoutError, IncompleteReadError, ConnectionClosedError)


@dataclass(frozen=True)
class StorageConfig:
    """How to reach S3. Unset fields fall back to the standard AWS environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = 5  # per request, the first try included
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # Objects larger than this go up as multipart uploads (S3 needs parts >= 5 MiB).
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB

    def resolved_endpoint(self) -> str | None:
        """The endpoint URL in effect (explicit, else ``AWS_ENDPOINT_URL``, else AWS default)."""
        return self.endpoint_url or os.environ.get(C.ENV_AWS_ENDPOINT) or None

    def resolved_region(self) -> str:
        """The region in effect (explicit, else ``AWS_DEFAULT_REGION``, else us-east-1)."""
        return self.region or os.environ.get(C.ENV_AWS_REGION) or DEFAULT_REGION


_DEFAULT_CFG = StorageConfig()


# ---------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    """True for ``s3://`` URIs, False for local paths (plain or ``file://``)."""
    return uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises StorageError for a URI without bucket."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"invalid S3 URI {uri!r}: no bucket name", hint="write it as s3://BUCKET/PREFIX")
    return bucket, key


def _local(uri: str) -> str:
    return uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri


# ---------------------------------------------------------------- client cache

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _client_key(cfg: StorageConfig) -> tuple[Any, ...]:
    # The pid is part of the key: a boto3 client must not cross a fork (data-loader workers).
    return (os.getpid(), cfg, cfg.resolved_endpoint(), cfg.resolved_region())


def s3_client(cfg: StorageConfig | None = None) -> Any:
    """The boto3 S3 client for ``cfg`` (one per config and process, created thread-safely)."""
    cfg = cfg or _DEFAULT_CFG
    key = _client_key(cfg)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _make_client(cfg)
            _clients[key] = client
    return client


def _make_client(cfg: StorageConfig) -> Any:
    import boto3.session  # deferred: boto3 import costs ~0.3 s and local-only runs never need it

    config = Config(
        # total_max_attempts counts the first try, like AWS_MAX_ATTEMPTS; botocore's "max_attempts"
        # would count retries only.
        retries={"mode": cfg.retry_mode, "total_max_attempts": cfg.max_attempts},
        s3={"addressing_style": cfg.addressing_style},
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
    )
    # A fresh Session per client: the default session is not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=cfg.resolved_endpoint(), region_name=cfg.resolved_region(), config=config
    )


def clear_client_cache() -> None:
    """Forget cached clients (after credentials or endpoint environment variables change)."""
    with _clients_lock:
        _clients.clear()


# ---------------------------------------------------------------- streaming reads


class S3ReadStream(io.RawIOBase):
    """A GetObject body that resumes (Range request) after a dropped connection.

    Bounded: at most ``cfg.max_attempts`` reopenings in a row without progress.
    """

    def __init__(self, uri: str, cfg: StorageConfig, opener: Callable[[int], Any]) -> None:
        super().__init__()
        self.uri, self._cfg, self._opener = uri, cfg, opener
        self._pos = 0
        self._body = opener(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        failures = 0
        while True:
            try:
                chunk = self._body.read(len(view))
            except _STREAM_ERRORS as exc:
                failures += 1
                if failures >= self._cfg.max_attempts:
                    raise s3_error(exc, self.uri, self._cfg, "read") from exc
                self._reopen()
                continue
            view[: len(chunk)] = chunk
            self._pos += len(chunk)
            return len(chunk)

    def _reopen(self) -> None:
        self._close_body()
        self._body = self._opener(self._pos)

    def _close_body(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        if not self.closed:
            self._close_body()
        super().close()


def _s3_opener(uri: str, cfg: StorageConfig) -> Callable[[int], Any]:
    bucket, key = split_s3(uri)
    client = s3_client(cfg)

    def open_at(offset: int) -> Any:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        with s3_errors(uri, cfg, "read"):
            return client.get_object(Bucket=bucket, Key=key, **extra)["Body"]

    return open_at


def open_stream(uri: str, cfg: StorageConfig | None = None) -> BinaryIO:
    """Open ``uri`` for streaming reads (S3: the GetObject body, never a temporary download)."""
    cfg = cfg or _DEFAULT_CFG
    if is_s3(uri):
        return io.BufferedReader(S3ReadStream(uri, cfg, _s3_opener(uri, cfg)), buffer_size=MiB)
    with os_errors(uri, "open"):
        return open(_local(uri), "rb")  # the caller owns and closes it


def read_bytes(uri: str, cfg: StorageConfig | None = None) -> bytes:
    """The whole content of ``uri``."""
    with open_stream(uri, cfg) as stream, os_errors(uri, "read"):
        return stream.read()


# ---------------------------------------------------------------- writes


def write_bytes(uri: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    """Write ``data`` to ``uri`` atomically (readers see the old state or the complete new one)."""
    write_stream(uri, io.BytesIO(data), cfg)


def write_stream(uri: str, stream: IO[bytes], cfg: StorageConfig | None = None) -> None:
    """Copy a readable binary stream to ``uri`` atomically (multipart on S3 for large objects)."""
    cfg = cfg or _DEFAULT_CFG
    if is_s3(uri):
        _s3_upload(uri, stream, cfg)
    else:
        _local_write(_local(uri), stream, uri)


def _s3_upload(uri: str, stream: IO[bytes], cfg: StorageConfig) -> None:
    from boto3.s3.transfer import TransferConfig

    bucket, key = split_s3(uri)
    transfer = TransferConfig(
        multipart_threshold=cfg.multipart_threshold,
        multipart_chunksize=cfg.multipart_chunksize,
        use_threads=False,
    )
    # s3transfer aborts a failed multipart upload, so no partial object ever becomes visible.
    with os_errors(uri, "write"), s3_errors(uri, cfg, "write"):
        s3_client(cfg).upload_fileobj(stream, bucket, key, Config=transfer)


def _local_write(path: str, stream: IO[bytes], uri: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    with os_errors(uri, "write"):
        os.makedirs(directory, exist_ok=True)
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(4 * MiB):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def upload_file(local_path: str, uri: str, cfg: StorageConfig | None = None) -> None:
    """Copy a local file to ``uri`` (checkpoints, plots) with the same atomicity as write_bytes."""
    with os_errors(local_path, "read"), open(local_path, "rb") as src:
        write_stream(uri, src, cfg)


def download_file(uri: str, local_path: str, cfg: StorageConfig | None = None) -> None:
    """Copy ``uri`` to a local file, atomically."""
    with open_stream(uri, cfg) as src:
        _local_write(local_path, src, local_path)


# ---------------------------------------------------------------- metadata


def exists(uri: str, cfg: StorageConfig | None = None) -> bool:
    """Whether the object/file ``uri`` exists (a missing bucket is an error, not False)."""
    cfg = cfg or _DEFAULT_CFG
    if not is_s3(uri):
        return os.path.exists(_local(uri))
    bucket, key = split_s3(uri)
    try:
        s3_client(cfg).head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
            _require_bucket(uri, cfg)
            return False
        raise s3_error(exc, uri, cfg, "check") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, uri, cfg, "check") from exc
    return True


def _require_bucket(uri: str, cfg: StorageConfig) -> None:
    # HEAD on a key answers a bare 404 for a missing bucket too; ask the bucket to tell them apart.
    bucket, _ = split_s3(uri)
    try:
        s3_client(cfg).head_bucket(Bucket=bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
            raise no_such_bucket(bucket, uri) from exc
        raise s3_error(exc, uri, cfg, "check") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, uri, cfg, "check") from exc


def list_uris(prefix: str, cfg: StorageConfig | None = None) -> list[str]:
    """Sorted full URIs of all objects/files under the directory-like ``prefix`` (recursive).

    ``s3://b/run/embed`` lists ``s3://b/run/embed/...`` but not ``s3://b/run/embed2/...``.
    A prefix with nothing under it gives ``[]``; a missing bucket is an error.
    """
    cfg = cfg or _DEFAULT_CFG
    if is_s3(prefix):
        return _list_s3(prefix, cfg)
    return _list_local(prefix)


def _list_s3(prefix: str, cfg: StorageConfig) -> list[str]:
    bucket, key = split_s3(prefix)
    key_prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    paginator = s3_client(cfg).get_paginator("list_objects_v2")
    out: list[str] = []
    with s3_errors(prefix, cfg, "list"):
        for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
            out.extend(f"{S3_SCHEME}{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    return sorted(out)


def _list_local(prefix: str) -> list[str]:
    root = _local(prefix)
    if not os.path.isdir(root):
        return []
    base = prefix.rstrip("/") or "/"
    out: list[str] = []
    with os_errors(prefix, "list"):
        for dirpath, _dirs, files in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            for name in files:
                if _TMP_NAME.match(name):
                    continue
                parts = [name] if rel == "." else [*rel.split(os.sep), name]
                out.append("/".join([base.rstrip("/"), *parts]))
    return sorted(out)


def delete(uri: str, cfg: StorageConfig | None = None) -> None:
    """Delete ``uri``; an object/file that is already gone is fine."""
    cfg = cfg or _DEFAULT_CFG
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_errors(uri, cfg, "delete"):
            s3_client(cfg).delete_object(Bucket=bucket, Key=key)
        return
    try:
        os.unlink(_local(uri))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise os_error(exc, uri, "delete") from exc


# ---------------------------------------------------------------- typed helpers


def read_json(uri: str, cfg: StorageConfig | None = None) -> Any:
    """Parse the JSON document at ``uri``."""
    data = read_bytes(uri, cfg)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise StorageError(f"{uri} is not valid JSON: {exc}", hint="delete it and re-run its stage") from exc


def write_json(uri: str, obj: Any, cfg: StorageConfig | None = None) -> None:
    """Write ``obj`` as JSON (sorted keys, so equal objects give byte-identical files)."""
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), cfg)


def read_npy(uri: str, cfg: StorageConfig | None = None) -> np.ndarray:
    """Load a ``.npy`` array (no pickles)."""
    data = read_bytes(uri, cfg)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise StorageError(
            f"{uri} is not a valid .npy file: {exc}", hint="delete it and re-run its stage"
        ) from exc


def write_npy(uri: str, arr: np.ndarray, cfg: StorageConfig | None = None) -> None:
    """Save ``arr`` as ``.npy``, atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    write_bytes(uri, buf.getvalue(), cfg)


def write_marker(uri: str, payload: dict[str, Any], cfg: StorageConfig | None = None) -> None:
    """Write a completion marker. Stages call this LAST, after every output it vouches for."""
    write_json(uri, payload, cfg)


def read_marker(uri: str, cfg: StorageConfig | None = None) -> dict[str, Any] | None:
    """The payload of a completion marker, or None when the work is not done yet."""
    if not exists(uri, cfg):
        return None
    return read_json(uri, cfg)


# ---------------------------------------------------------------- preflight


def check_access(uri: str, cfg: StorageConfig | None = None, write: bool = False) -> None:
    """Fail early, with a fix, when ``uri`` (a prefix) cannot be read (or written, if ``write``)."""
    cfg = cfg or _DEFAULT_CFG
    if is_s3(uri):
        _check_s3(uri, cfg, write)
    else:
        _check_local(uri, write)


def _check_s3(uri: str, cfg: StorageConfig, write: bool) -> None:
    bucket, key = split_s3(uri)
    client = s3_client(cfg)
    key_prefix = key.rstrip("/")
    with s3_errors(uri, cfg, "list"):
        listing = client.list_objects_v2(Bucket=bucket, Prefix=key_prefix, MaxKeys=1)
    if not write and key_prefix and not listing.get("KeyCount", 0):
        raise not_found(uri)
    if write:
        probe = f"{key_prefix}/.dynamics-access-check-{uuid.uuid4().hex}".lstrip("/")
        with s3_errors(uri, cfg, "write to"):
            client.put_object(Bucket=bucket, Key=probe, Body=b"")
            client.delete_object(Bucket=bucket, Key=probe)


def _check_local(uri: str, write: bool) -> None:
    path = _local(uri)
    if not write:
        if not os.path.exists(path):
            raise not_found(uri)
        if not os.access(path, os.R_OK):
            raise os_error(PermissionError(path), uri, "read")
        return
    with os_errors(uri, "write to"):
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
