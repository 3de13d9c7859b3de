"""Shared pytest fixtures.

S3: ``s3_server`` (one real moto server per session) and ``s3_bucket`` (a fresh bucket per test,
with the AWS environment pointed at the server). Kubernetes: ``h``, a loopback API server test double
with a run harness. Hypothesis: the "default" profile (150 examples, no deadline: CI machines are
slow and shared) or ``HYPOTHESIS_PROFILE=fuzz`` for thousands of examples.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from s3server import MotoServer, start_moto_server

from dynamics.storage import objects as storage

settings.register_profile("default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """A real moto S3 server on 127.0.0.1 (``.endpoint_url``), shared by the session."""
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """The AWS environment variables pointed at the moto server, with fresh boto3 clients."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    storage.clear_client_cache()
    yield s3_server
    storage.clear_client_cache()


@pytest.fixture
def s3_bucket(s3_env: MotoServer) -> str:
    """A fresh, uniquely named bucket on the moto server, as ``s3://name``."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    storage.s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def work_bucket(s3_env: MotoServer) -> None:
    """Controllers write the resolved spec to the work directory: on the moto server, never elsewhere."""
    from kubedouble.harness import ensure_work_bucket

    ensure_work_bucket()


@pytest.fixture
def h(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A running Kubernetes API test double with a kubeconfig (also in $KUBECONFIG) and a run harness."""
    from kubedouble.harness import harness

    with harness(tmp_path, gc_delay=0.05) as hh:
        monkeypatch.setenv("KUBECONFIG", str(hh.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield hh
