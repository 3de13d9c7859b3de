"""Turning S3 and filesystem failures into one user-facing StorageError each.

Messages name the URI and the fix; the server's own error text is never included, since it can
echo access key ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from dynamics import constants as C
from dynamics.errors import StorageError
from dynamics.storage.config import S3_SCHEME, StorageConfig

ACCESS_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

CREDENTIALS_HINT = (
    f"check the Secret named in storage.credentialsSecret (keys {C.SECRET_KEY_ID} / "
    f"{C.SECRET_ACCESS_KEY}), the {C.ENV_AWS_KEY_ID} / {C.ENV_AWS_SECRET} environment variables, "
    "or the service account's IAM role"
)



def s3_error(exc: ClientError | BotoCoreError, uri: str, cfg: StorageConfig, action: str) -> StorageError:
    """One user-facing StorageError for a failed S3 call (no server text: it may echo key ids)."""
    bucket = uri[len(S3_SCHEME) :].split("/", 1)[0]
    if isinstance(exc, EndpointConnectionError):
        endpoint = cfg.resolved_endpoint() or "AWS default"
        return StorageError(
            f"cannot reach S3 endpoint {endpoint} (while trying to {action} {uri})",
            hint=f"check storage.endpoint / {C.ENV_AWS_ENDPOINT} and the network path to it",
        )
    if isinstance(exc, NoCredentialsError):
        return StorageError(f"no S3 credentials found to {action} {uri}", hint=CREDENTIALS_HINT)
    if isinstance(exc, BotoCoreError):
        return StorageError(
            f"S3 request failed to {action} {uri}: {type(exc).__name__} (after {cfg.max_attempts} attempts)",
            hint=f"check storage.endpoint / {C.ENV_AWS_ENDPOINT} and the network; re-run the stage",
        )
    code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
    if code == "NoSuchBucket":
        return no_such_bucket(bucket, uri)
    if code in ACCESS_CODES:
        return StorageError(f"credentials rejected for {uri} ({code})", hint=CREDENTIALS_HINT)
    if code in NOT_FOUND_CODES:
        return not_found(uri)
    return StorageError(
        f"S3 refused to {action} {uri}: {code}",
        hint="check the bucket policy and storage settings; transient errors were already retried",
    )


def no_such_bucket(bucket: str, uri: str) -> StorageError:
    return StorageError(
        f"bucket {bucket!r} does not exist ({uri})",
        hint="create it or fix storage.workdir / data.shards in the run spec",
    )


def not_found(uri: str) -> StorageError:
    return StorageError(
        f"{uri} not found",
        hint="check the path; if it is a stage output, run (or finish) the stage that writes it",
    )


def os_error(exc: OSError, uri: str, action: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return not_found(uri)
    if isinstance(exc, PermissionError):
        return StorageError(
            f"permission denied to {action} {uri}",
            hint="check the directory's owner and mode, or the volume mount of the pod",
        )
    return StorageError(f"cannot {action} {uri}: {exc.strerror or exc}", hint="check the path and free space")


@contextmanager
def s3_errors(uri: str, cfg: StorageConfig, action: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, uri, cfg, action) from exc


@contextmanager
def os_errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise os_error(exc, uri, action) from exc
