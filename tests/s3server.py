"""A real moto S3 server on loopback, run as a subprocess for the tests.

moto's server speaks the S3 HTTP API, so boto3, webdataset URL handlers and our storage module are
exercised over real HTTP. It accepts any credentials unless IAM authentication is switched on with
:meth:`MotoServer.set_auth` (moto's ``/moto-api/reset-auth``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """Handle on a running ``python -m moto.server`` process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``, for boto3's ``endpoint_url`` / ``AWS_ENDPOINT_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, body: bytes = b"") -> bytes:
        """POST to one of moto's control endpoints (``/moto-api/...``)."""
        req = urllib.request.Request(
            f"{self.endpoint_url}{path}", data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    def set_auth(self, enabled: bool) -> None:
        """Switch IAM authentication of every S3 request on (unknown keys rejected) or off."""
        self.post("/moto-api/reset-auth", b"0" if enabled else b"inf")

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        """Terminate the server (idempotent) and remove its log."""
        if self._stopped:
            return
        self._stopped = True
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.unlink(self.log_path)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_moto_server() -> MotoServer:
    """Start moto on a free loopback port and wait until it answers HTTP."""
    port = free_port()
    fd, log_path = tempfile.mkstemp(prefix="moto-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = MotoServer(port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_text = server.log()
            server.stop()
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{log_text}")
        if _answers(server.endpoint_url):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto server did not answer on port {port} within {START_TIMEOUT_S} s")
