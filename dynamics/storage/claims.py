"""Claims on shared folders: the first run to need a shared stage computes it, the others wait.

A claim is one small JSON object, ``<folder>/_claim.json``, created only if absent -- locally by a hard
link of a complete temporary (``link`` fails when the name exists), on S3 by a conditional write
(``put_object(IfNoneMatch="*")``: S3 answers 412 when the key exists). It names its owner and the time
of its last heartbeat; the owner renews it well within :data:`LEASE_S`. A claim not renewed for longer
is stale (its owner died) and may be taken over: on S3 by a write conditional on the stale version's
ETag (``IfMatch``), locally under an ``flock`` on a side file, so of several runs that find it stale
exactly one wins. Renewal uses the same conditions, so an owner that was taken over finds out
(:class:`ClaimLost`) instead of overwriting the new owner's claim.

API (pure decisions, thin I/O)::

    owner = new_owner("run-a")                     # unique per process and attempt
    claim = try_claim(folder, owner, cfg)          # Claim when ours now, None when a live owner holds it
                                                   # (a claim of owner's own label is a dead attempt's)
    claim = renew(claim, cfg)                      # heartbeat; raises ClaimLost if taken over
    release(claim, cfg)                            # delete it (only if still ours)
    read_claim(folder, cfg) -> Claim | None        # who holds it (for status messages)
    is_stale(claim, now, lease_s) -> bool          # pure
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from botocore.exceptions import ClientError

from dynamics.errors import StorageError
from dynamics.storage.config import DEFAULT_CFG, StorageConfig, is_s3, local_path, split_s3
from dynamics.storage.errors import s3_errors
from dynamics.storage.layout import join
from dynamics.storage.s3 import s3_client

CLAIM_NAME = "_claim.json"
LEASE_S = 120.0  # a claim whose heartbeat is older is stale: its owner is gone
RENEW_S = 20.0  # owners renew this often (well within the lease, across slow S3 calls)


class ClaimLost(StorageError):
    """Our claim was taken over (we were presumed dead): stop writing into the folder."""


@dataclass(frozen=True)
class Claim:
    """A claim as read or written: its object, owner, last heartbeat (epoch seconds) and version."""

    uri: str
    owner: str
    heartbeat: float
    version: str = ""  # the S3 ETag of the object (conditions renewals and takeovers); "" locally


def new_owner(label: str) -> str:
    """A unique owner name: ``label`` (e.g. the run), host, PID and a random suffix."""
    return f"{label}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_uri(folder: str) -> str:
    """Where the claim on ``folder`` lives."""
    return join(folder, CLAIM_NAME)


def is_stale(claim: Claim, now: float, lease_s: float = LEASE_S) -> bool:
    """Whether ``claim``'s owner missed its lease (pure)."""
    return now - claim.heartbeat > lease_s


def _body(owner: str, now: float) -> bytes:
    return json.dumps({"owner": owner, "heartbeat": now}).encode()


def _parse(uri: str, data: bytes, version: str) -> Claim:
    try:
        doc = json.loads(data)
        return Claim(uri, str(doc["owner"]), float(doc["heartbeat"]), version)
    except (ValueError, KeyError, TypeError):
        return Claim(uri, "", 0.0, version)  # unreadable: treated as stale, taken over


# ---------------------------------------------------------------- S3


def _precondition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict") or \
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)


def _s3_put(uri: str, body: bytes, cfg: StorageConfig, **condition: str) -> str | None:
    """Conditional put; the new ETag, or None when the condition failed."""
    bucket, key = split_s3(uri)
    with s3_errors(uri, cfg, "claim"):
        try:
            reply = s3_client(cfg).put_object(Bucket=bucket, Key=key, Body=body, **condition)
        except ClientError as exc:
            if _precondition_failed(exc):
                return None
            raise
    return str(reply.get("ETag", ""))


def _s3_read(uri: str, cfg: StorageConfig) -> Claim | None:
    bucket, key = split_s3(uri)
    with s3_errors(uri, cfg, "read"):
        try:
            reply = s3_client(cfg).get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return _parse(uri, reply["Body"].read(), str(reply.get("ETag", "")))


# ---------------------------------------------------------------- local


@contextlib.contextmanager
def _local_mutex(path: str) -> Iterator[None]:
    """Serialises takeovers, renewals and releases of one local claim (creation needs no lock)."""
    with open(path + ".lock", "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _local_read(path: str) -> Claim | None:
    try:
        with open(path, "rb") as fh:
            return _parse(path, fh.read(), "")
    except FileNotFoundError:
        return None


def _local_create(path: str, body: bytes) -> bool:
    """Create ``path`` with ``body`` only if absent (a complete file or none: link of a temporary)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.new"
    with open(tmp, "wb") as fh:
        fh.write(body)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _local_replace(path: str, body: bytes) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.new"
    with open(tmp, "wb") as fh:
        fh.write(body)
    os.replace(tmp, path)


# ---------------------------------------------------------------- API


def read_claim(folder: str, cfg: StorageConfig | None = None) -> Claim | None:
    """The current claim on ``folder``, or None."""
    uri = claim_uri(folder)
    return _s3_read(uri, cfg or DEFAULT_CFG) if is_s3(uri) else _local_read(local_path(uri))


def owner_label(owner: str) -> str:
    """The label :func:`new_owner` was given."""
    return owner.rsplit("@", 1)[0]


def try_claim(folder: str, owner: str, cfg: StorageConfig | None = None, lease_s: float = LEASE_S,
              now: float | None = None) -> Claim | None:
    """Claim ``folder`` for ``owner``: the new Claim when it is ours (created, or a stale one taken over),
    None when another owner holds a live claim.

    A claim held under ``owner``'s own label is taken over at once: callers give a label only one live
    process can hold at a time (a run whose lock they hold), so its holder is a dead earlier attempt.
    """
    now = time.time() if now is None else now

    def stale(held: Claim) -> bool:
        return is_stale(held, now, lease_s) or owner_label(held.owner) == owner_label(owner)

    uri, body = claim_uri(folder), _body(owner, now)
    if is_s3(uri):
        cfg = cfg or DEFAULT_CFG
        etag = _s3_put(uri, body, cfg, IfNoneMatch="*")
        if etag is not None:
            return Claim(uri, owner, now, etag)
        held = _s3_read(uri, cfg)
        if held is None:  # released in between: try once more from the start
            etag = _s3_put(uri, body, cfg, IfNoneMatch="*")
            return Claim(uri, owner, now, etag) if etag is not None else None
        if not stale(held):
            return None
        etag = _s3_put(uri, body, cfg, IfMatch=held.version)  # of several takers exactly one wins
        return Claim(uri, owner, now, etag) if etag is not None else None
    path = local_path(uri)
    if _local_create(path, body):
        return Claim(uri, owner, now)
    with _local_mutex(path):
        held = _local_read(path)
        if held is not None and not stale(held):
            return None
        _local_replace(path, body)
    return Claim(uri, owner, now)


def renew(claim: Claim, cfg: StorageConfig | None = None, now: float | None = None) -> Claim:
    """Refresh ``claim``'s heartbeat; raises :class:`ClaimLost` when another owner took it over."""
    now = time.time() if now is None else now
    body = _body(claim.owner, now)
    lost = ClaimLost(f"the claim {claim.uri} was taken over by another run (this one was presumed dead)",
                     hint="run again: finished work is kept, the rest is redone by one run")
    if is_s3(claim.uri):
        etag = _s3_put(claim.uri, body, cfg or DEFAULT_CFG, IfMatch=claim.version)
        if etag is None:
            raise lost
        return Claim(claim.uri, claim.owner, now, etag)
    path = local_path(claim.uri)
    with _local_mutex(path):
        held = _local_read(path)
        if held is None or held.owner != claim.owner:
            raise lost
        _local_replace(path, body)
    return Claim(claim.uri, claim.owner, now)


def release(claim: Claim, cfg: StorageConfig | None = None) -> None:
    """Delete ``claim`` if it is still ours (a taken-over claim is left to its new owner)."""
    if is_s3(claim.uri):
        cfg = cfg or DEFAULT_CFG
        held = _s3_read(claim.uri, cfg)
        if held is not None and held.owner == claim.owner:
            bucket, key = split_s3(claim.uri)
            with s3_errors(claim.uri, cfg, "delete"):
                s3_client(cfg).delete_object(Bucket=bucket, Key=key)
        return
    path = local_path(claim.uri)
    with _local_mutex(path):
        held = _local_read(path)
        if held is not None and held.owner == claim.owner:
            os.unlink(path)
