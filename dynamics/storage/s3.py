"""The S3 side of storage: one cached boto3 client per config and process, and resumable streaming reads."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from dynamics.storage.config import DEFAULT_CFG, StorageConfig, split_s3
from dynamics.storage.errors import s3_error, s3_errors

# Errors a streaming GetObject body can raise mid-read; they are transient, so we resume.
_STREAM_ERRORS = (ResponseStreamingError, ReadTimeoutError, IncompleteReadError, ConnectionClosedError)


# ---------------------------------------------------------------- client cache

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _client_key(cfg: StorageConfig) -> tuple[Any, ...]:
    # The pid is part of the key: a boto3 client must not cross a fork (data-loader workers).
    return (os.getpid(), cfg, cfg.resolved_endpoint(), cfg.resolved_region())


def s3_client(cfg: StorageConfig | None = None) -> Any:
    """The boto3 S3 client for ``cfg`` (one per config and process, created thread-safely)."""
    cfg = cfg or DEFAULT_CFG
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


_READ_ALL_CHUNK = 1 << 20


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

    def readall(self) -> bytes:
        """The rest of the object, read a MiB at a time (io's default reads 8 KiB per call: 4x the CPU)."""
        out = bytearray()
        chunk = bytearray(_READ_ALL_CHUNK)
        while n := self.readinto(chunk):
            out += memoryview(chunk)[:n]
        return bytes(out)

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


def s3_opener(uri: str, cfg: StorageConfig) -> Callable[[int], Any]:
    """A function that opens the GetObject body of ``uri`` at a byte offset (for resumable reads)."""
    bucket, key = split_s3(uri)
    client = s3_client(cfg)

    def open_at(offset: int) -> Any:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        with s3_errors(uri, cfg, "read"):
            return client.get_object(Bucket=bucket, Key=key, **extra)["Body"]

    return open_at
