"""Where storage lives: S3 connection settings and URI helpers (``s3://bucket/key`` or a local path)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from dynamics import constants as C
from dynamics.errors import StorageError

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
DEFAULT_REGION = "us-east-1"
MiB = 1024 * 1024


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


DEFAULT_CFG = StorageConfig()


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


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (plain or ``file://``)."""
    return uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
