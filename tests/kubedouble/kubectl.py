"""Run the real ``kubectl`` binary (fetched by ``scripts/fetch_tools.py``) against a double."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "kubectl"
KUBECTL_TIMEOUT_S = 60


@dataclass(frozen=True)
class Kubectl:
    """``kubectl`` bound to one kubeconfig, with its discovery cache in a private directory."""

    kubeconfig: Path
    cache_dir: Path

    @staticmethod
    def available() -> bool:
        """Whether the binary has been fetched."""
        return KUBECTL.exists()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS``; with ``check`` a non-zero exit raises with kubectl's stderr."""
        cmd = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc
