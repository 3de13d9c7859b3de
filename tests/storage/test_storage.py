"""dynamics.storage.objects against local directories and a real moto S3 server."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ResponseStreamingError
from s3server import MotoServer, free_port

from dynamics.errors import StorageError
from dynamics.storage import objects as storage
from dynamics.storage.objects import MiB, S3ReadStream, StorageConfig

SECRET = "sEcReT-value-that-must-never-be-printed"
KEY_ID = "AKIAEXAMPLEKEYID0001"


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A work directory, once local and once in a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "work")
    return request.getfixturevalue("s3_bucket") + "/work"


@pytest.fixture
def secret_env(s3_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinctive credentials (moto accepts any), so tests can check they are never echoed."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    storage.clear_client_cache()


def assert_clean(err: StorageError, *must_contain: str) -> None:
    text = str(err)
    for part in must_contain:
        assert part in text, f"{part!r} missing from {text!r}"
    assert err.hint, "every storage error carries a fix"
    assert SECRET not in text and KEY_ID not in text


# ---------------------------------------------------------------- round trips


def test_round_trip(root: str) -> None:
    data = bytes(range(256)) * 100
    storage.write_bytes(f"{root}/a/b/blob.bin", data)
    assert storage.read_bytes(f"{root}/a/b/blob.bin") == data
    assert storage.exists(f"{root}/a/b/blob.bin")
    assert not storage.exists(f"{root}/a/b/other.bin")

    storage.write_json(f"{root}/x.json", {"b": 1, "a": [1, 2]})
    assert storage.read_json(f"{root}/x.json") == {"a": [1, 2], "b": 1}

    arr = np.arange(12, dtype=np.float16).reshape(3, 4)
    storage.write_npy(f"{root}/v.npy", arr)
    back = storage.read_npy(f"{root}/v.npy")
    assert back.dtype == np.float16 and np.array_equal(back, arr)

    assert storage.read_marker(f"{root}/part.done") is None
    storage.write_marker(f"{root}/part.done", {"rows": 3})
    assert storage.read_marker(f"{root}/part.done") == {"rows": 3}


def test_overwrite_replaces_content(root: str) -> None:
    storage.write_bytes(f"{root}/f", b"old content, longer")
    storage.write_bytes(f"{root}/f", b"new")
    assert storage.read_bytes(f"{root}/f") == b"new"


def test_list_is_sorted_recursive_and_directory_scoped(root: str) -> None:
    names = ["embed/part-00002.npy", "embed/part-00000.npy", "embed/sub/z.json", "embed2/x", "embedx"]
    for name in names:
        storage.write_bytes(f"{root}/{name}", b"1")
    listed = storage.list_uris(f"{root}/embed")
    assert listed == [f"{root}/embed/part-00000.npy", f"{root}/embed/part-00002.npy", f"{root}/embed/sub/z.json"]
    assert storage.list_uris(f"{root}/embed/") == listed
    assert storage.list_uris(f"{root}/nothing-here") == []


def test_delete_is_idempotent(root: str) -> None:
    storage.write_bytes(f"{root}/gone", b"x")
    storage.delete(f"{root}/gone")
    assert not storage.exists(f"{root}/gone")
    storage.delete(f"{root}/gone")  # missing is fine


def test_open_stream_reads_incrementally(root: str) -> None:
    data = os.urandom(3 * MiB)
    storage.write_bytes(f"{root}/big", data)
    with storage.open_stream(f"{root}/big") as stream:
        head = stream.read(1000)
        rest = stream.read()
    assert head + rest == data
    if storage.is_s3(root):
        with storage.open_stream(f"{root}/big") as stream:
            assert isinstance(stream.raw, S3ReadStream)  # GetObject body, no temp download


def test_upload_and_download_file(root: str, tmp_path: Any) -> None:
    src = tmp_path / "ckpt.pt"
    src.write_bytes(b"weights" * 1000)
    storage.upload_file(str(src), f"{root}/ckpt/epoch_1.pt")
    dst = tmp_path / "dl" / "epoch_1.pt"
    storage.download_file(f"{root}/ckpt/epoch_1.pt", str(dst))
    assert dst.read_bytes() == src.read_bytes()


# ---------------------------------------------------------------- atomicity


def test_local_interrupted_write_leaves_old_content_and_no_temp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    target = f"{tmp_path}/out/data.bin"
    storage.write_bytes(target, b"complete v1")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(StorageError) as err:
        storage.write_bytes(target, b"v2" * 1000)
    assert_clean(err.value, target)
    assert storage.read_bytes(target) == b"complete v1"
    assert os.listdir(tmp_path / "out") == ["data.bin"]


def test_local_temp_files_are_invisible_to_list(tmp_path: Any) -> None:
    # A writer killed mid-write leaves its hidden temp file behind; listing must not return it.
    (tmp_path / ".part-00000.npy.tmp-0123456789abcdef0123456789abcdef").write_bytes(b"partial")
    storage.write_bytes(f"{tmp_path}/part-00001.npy", b"x")
    assert storage.list_uris(str(tmp_path)) == [f"{tmp_path}/part-00001.npy"]


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path: Any) -> None:
    stale = tmp_path / "train" / "checkpoints" / ".phase00-a-step000000004.pt.tmp-0123456789abcdef0123456789abcdef"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    keep = [tmp_path / "train" / "checkpoints" / "phase00-a-step000000002.pt", tmp_path / ".hidden.tmp-12",
            tmp_path / "notes.tmp-0123456789abcdef0123456789abcdef"]
    for path in keep:
        path.write_bytes(b"x")
    assert storage.remove_stale_temps(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and all(p.exists() for p in keep)
    assert storage.remove_stale_temps("s3://bucket/run") == []  # S3 writes leave no temporaries


def test_local_concurrent_reader_never_sees_partial_content(tmp_path: Any) -> None:
    target = f"{tmp_path}/shared.bin"
    size = 512 * 1024
    storage.write_bytes(target, bytes([0]) * size)
    seen: list[bytes] = []
    errors: list[StorageError] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(storage.read_bytes(target))
            except StorageError as exc:  # the file must never be missing either
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 40):
            storage.write_bytes(target, bytes([i]) * size)
    finally:
        done.set()
        thread.join()
    assert seen and not errors
    for blob in seen:
        assert len(blob) == size and blob.count(blob[:1]) == size


class _FailingStream(io.RawIOBase):
    """A source that dies after ``fail_after`` bytes, like a writer killed mid-upload."""

    def __init__(self, total: int, fail_after: int) -> None:
        super().__init__()
        self.total, self.fail_after, self.pos = total, fail_after, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.fail_after:
            raise OSError(5, "Input/output error")
        n = min(len(buffer), self.total - self.pos, self.fail_after - self.pos + 1)
        buffer[:n] = b"\x01" * n
        self.pos += n
        return n


SMALL_PARTS = StorageConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


def test_s3_multipart_write_round_trip(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/big/object.bin"
    data = os.urandom(11 * MiB)
    storage.write_bytes(uri, data, SMALL_PARTS)
    bucket, key = storage.split_s3(uri)
    etag = storage.s3_client(SMALL_PARTS).head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3"), "written as a 3-part multipart upload"
    assert storage.read_bytes(uri, SMALL_PARTS) == data


def test_s3_interrupted_multipart_upload_is_never_visible(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/big/object.bin"
    with pytest.raises(StorageError) as err:
        storage.write_stream(uri, _FailingStream(12 * MiB, fail_after=7 * MiB), SMALL_PARTS)
    assert_clean(err.value, uri)
    assert not storage.exists(uri)
    assert storage.list_uris(f"{s3_bucket}/big") == []
    bucket, _ = storage.split_s3(uri)
    uploads = storage.s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == [], "the failed multipart upload was aborted"


def test_s3_incomplete_multipart_upload_is_not_listed(s3_bucket: str) -> None:
    bucket, _ = storage.split_s3(s3_bucket)
    client = storage.s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key="embed/part-00000.npy")
    client.upload_part(
        Bucket=bucket, Key="embed/part-00000.npy", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * MiB
    )
    assert storage.list_uris(f"{s3_bucket}/embed") == []
    assert not storage.exists(f"{s3_bucket}/embed/part-00000.npy")


# ---------------------------------------------------------------- streaming resume


class _FlakyBody:
    """A GetObject body that drops the connection after ``cut`` bytes."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self._buf, self._cut, self._sent = io.BytesIO(data), cut, 0

    def read(self, n: int = -1) -> bytes:
        if self._cut is not None and self._sent >= self._cut:
            raise ResponseStreamingError(error="connection reset by peer")
        limit = n if self._cut is None else min(n, self._cut - self._sent)
        chunk = self._buf.read(limit)
        self._sent += len(chunk)
        return chunk

    def close(self) -> None:
        pass


def test_s3_stream_resumes_after_dropped_connection() -> None:
    data = os.urandom(100_000)
    offsets: list[int] = []

    def opener(offset: int) -> _FlakyBody:
        offsets.append(offset)
        # Every connection dies after 30 kB, except the last one.
        return _FlakyBody(data[offset:], cut=None if offset >= 60_000 else 30_000)

    stream = io.BufferedReader(S3ReadStream("s3://b/k", StorageConfig(max_attempts=3), opener))
    assert stream.read() == data
    assert offsets == [0, 30_000, 60_000]


def test_s3_stream_gives_up_after_max_attempts() -> None:
    def opener(offset: int) -> _FlakyBody:
        return _FlakyBody(b"x" * 10, cut=0)

    stream = S3ReadStream("s3://b/k", StorageConfig(max_attempts=3), opener)
    with pytest.raises(StorageError) as err:
        stream.read(5)
    assert "s3://b/k" in str(err.value)


# ---------------------------------------------------------------- errors


def test_missing_bucket_is_named_with_fix(secret_env: None) -> None:
    uri = "s3://no-such-bucket-dynamics/run/embed/part-00000.npy"
    for call in (
        lambda: storage.read_bytes(uri),
        lambda: storage.exists(uri),
        lambda: storage.list_uris("s3://no-such-bucket-dynamics/run"),
        lambda: storage.write_bytes(uri, b"x"),
        lambda: storage.check_access("s3://no-such-bucket-dynamics/run", write=True),
    ):
        with pytest.raises(StorageError) as err:
            call()
        assert_clean(err.value, "no-such-bucket-dynamics", "does not exist", "storage.workdir")


def test_missing_key_is_named(secret_env: None, s3_bucket: str, tmp_path: Any) -> None:
    for uri in (f"{s3_bucket}/run/missing.json", f"{tmp_path}/missing.json"):
        with pytest.raises(StorageError) as err:
            storage.read_json(uri)
        assert_clean(err.value, uri, "not found")


def test_unreachable_endpoint_is_named(secret_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    cfg = StorageConfig(endpoint_url=endpoint, max_attempts=2)
    with pytest.raises(StorageError) as err:
        storage.read_bytes("s3://bucket/key.json", cfg)
    assert_clean(err.value, "cannot reach S3 endpoint", endpoint, "s3://bucket/key.json", "AWS_ENDPOINT_URL")


@pytest.fixture
def iam_user(s3_env: MotoServer) -> Iterator[dict[str, str]]:
    """An IAM user allowed s3:*, with moto's request authentication switched on."""
    iam = boto3.client("iam", endpoint_url=s3_env.endpoint_url, region_name="us-east-1")
    name = f"user-{free_port()}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    s3_env.set_auth(True)
    try:
        yield {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        s3_env.set_auth(False)


def test_rejected_credentials(s3_bucket: str, iam_user: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"{s3_bucket}/run/spec.yaml"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_user["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_user["secret"])
    storage.clear_client_cache()
    storage.write_bytes(uri, b"name: demo\n")  # the right key works...

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # ...a wrong secret does not
    storage.clear_client_cache()
    for call in (lambda: storage.read_bytes(uri), lambda: storage.list_uris(s3_bucket), lambda: storage.exists(uri)):
        with pytest.raises(StorageError) as err:
            call()
        assert_clean(err.value, "credentials rejected", s3_bucket, "storage.credentialsSecret")
        assert iam_user["secret"] not in str(err.value)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)  # an unknown key id
    storage.clear_client_cache()
    with pytest.raises(StorageError) as err:
        storage.check_access(s3_bucket, write=True)
    assert_clean(err.value, "credentials rejected", "InvalidAccessKeyId")


def test_invalid_s3_uri() -> None:
    with pytest.raises(StorageError, match="no bucket"):
        storage.read_bytes("s3:///key")


def test_check_access(root: str) -> None:
    storage.check_access(f"{root}/new/dir", write=True)
    with pytest.raises(StorageError) as err:
        storage.check_access(f"{root}/absent")
    assert_clean(err.value, f"{root}/absent", "not found")
    storage.write_bytes(f"{root}/present/x", b"1")
    storage.check_access(f"{root}/present")
    assert storage.list_uris(f"{root}/new") == [], "the write probe is cleaned up"


# ---------------------------------------------------------------- client cache


def test_client_cached_per_config_and_thread_safe(s3_env: MotoServer) -> None:
    cfg = StorageConfig(max_attempts=3)
    clients: list[Any] = []
    threads = [threading.Thread(target=lambda: clients.append(storage.s3_client(cfg))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1
    assert storage.s3_client(StorageConfig(max_attempts=4)) is not clients[0]
    assert clients[0].meta.config.retries == {"mode": "standard", "total_max_attempts": 3}


def test_config_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.example:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    cfg = StorageConfig()
    assert cfg.resolved_endpoint() == "http://minio.example:9000"
    assert cfg.resolved_region() == "eu-west-3"
    assert StorageConfig(endpoint_url="http://other:1", region="x").resolved_endpoint() == "http://other:1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert StorageConfig().resolved_region() == "us-east-1"
