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

import contextlib
import io
import json
import os
import re
import tempfile
import uuid
from typing import IO, Any, BinaryIO

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from dynamics.errors import StorageError
from dynamics.storage.config import (
    DEFAULT_CFG,
    S3_SCHEME,
    MiB,
    StorageConfig,
    is_s3,
    local_path,
    split_s3,
)
from dynamics.storage.errors import (
    NOT_FOUND_CODES,
    no_such_bucket,
    not_found,
    os_error,
    os_errors,
    s3_error,
    s3_errors,
)
from dynamics.storage.s3 import S3ReadStream, clear_client_cache, s3_client, s3_opener

# The storage API in one namespace: callers write `from dynamics.storage import objects as storage`.
__all__ = ["MiB", "S3ReadStream", "StorageConfig", "check_access", "clear_client_cache", "delete", "download_file",
           "exists", "is_s3", "list_uris", "open_stream", "read_bytes", "read_json", "read_marker", "read_npy",
           "remove_stale_temps", "s3_client", "split_s3", "upload_dir", "upload_file", "write_bytes", "write_json",
           "write_marker", "write_npy", "write_stream"]

# Our local temporaries look like ".<name>.tmp-<hex>"; list_uris hides them so a reader never
# mistakes a half-written file for an artifact.
_TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


def open_stream(uri: str, cfg: StorageConfig | None = None) -> BinaryIO:
    """Open ``uri`` for streaming reads (S3: the GetObject body, never a temporary download)."""
    cfg = cfg or DEFAULT_CFG
    if is_s3(uri):
        return io.BufferedReader(S3ReadStream(uri, cfg, s3_opener(uri, cfg)), buffer_size=MiB)
    with os_errors(uri, "open"):
        return open(local_path(uri), "rb")  # the caller owns and closes it


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
    cfg = cfg or DEFAULT_CFG
    if is_s3(uri):
        _s3_upload(uri, stream, cfg)
    else:
        _local_write(local_path(uri), stream, uri)


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


def remove_stale_temps(uri: str, cfg: StorageConfig | None = None) -> list[str]:
    """Delete temporaries that killed writes left under local directory ``uri``; returns their paths.

    Only call this while no writer of the tree can be running (a lock or lease held): a live
    writer's temporary looks the same. S3 writes leave none (multipart uploads are aborted).
    """
    del cfg  # the same signature as every other storage call
    if is_s3(uri) or not os.path.isdir(local_path(uri)):
        return []
    removed = []
    for root, _dirs, files in os.walk(local_path(uri)):
        for name in files:
            if _TMP_NAME.match(name):
                path = os.path.join(root, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
    return removed


def upload_file(local_path: str, uri: str, cfg: StorageConfig | None = None) -> None:
    """Copy a local file to ``uri`` (checkpoints, plots) with the same atomicity as write_bytes."""
    with os_errors(local_path, "read"), open(local_path, "rb") as src:
        write_stream(uri, src, cfg)


def upload_dir(local_dir: str, prefix: str, cfg: StorageConfig | None = None) -> None:
    """Upload every file under ``local_dir`` to ``prefix``, keeping relative paths (TensorBoard, W&B files)."""
    for root, _dirs, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            upload_file(path, f"{prefix.rstrip('/')}/{rel}", cfg)


def download_file(uri: str, local_path: str, cfg: StorageConfig | None = None) -> None:
    """Copy ``uri`` to a local file, atomically."""
    with open_stream(uri, cfg) as src:
        _local_write(local_path, src, local_path)


# ---------------------------------------------------------------- metadata


def exists(uri: str, cfg: StorageConfig | None = None) -> bool:
    """Whether the object/file ``uri`` exists (a missing bucket is an error, not False)."""
    cfg = cfg or DEFAULT_CFG
    if not is_s3(uri):
        return os.path.exists(local_path(uri))
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
    cfg = cfg or DEFAULT_CFG
    if is_s3(prefix):
        return _list_s3(prefix, cfg)
    return _listlocal_path(prefix)


def _list_s3(prefix: str, cfg: StorageConfig) -> list[str]:
    bucket, key = split_s3(prefix)
    key_prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    paginator = s3_client(cfg).get_paginator("list_objects_v2")
    out: list[str] = []
    with s3_errors(prefix, cfg, "list"):
        for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
            out.extend(f"{S3_SCHEME}{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    return sorted(out)


def _listlocal_path(prefix: str) -> list[str]:
    root = local_path(prefix)
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
    cfg = cfg or DEFAULT_CFG
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_errors(uri, cfg, "delete"):
            s3_client(cfg).delete_object(Bucket=bucket, Key=key)
        return
    try:
        os.unlink(local_path(uri))
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
    cfg = cfg or DEFAULT_CFG
    if is_s3(uri):
        _check_s3(uri, cfg, write)
    else:
        _checklocal_path(uri, write)


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


def _checklocal_path(uri: str, write: bool) -> None:
    path = local_path(uri)
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
