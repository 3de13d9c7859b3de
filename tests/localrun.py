"""What the --local tests share: the installed console scripts and a clean environment to run them in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
SUBMIT = str(BIN / "dynamics-submit")


def local_env() -> dict[str, str]:
    """This environment with the venv's scripts first, and no S3 endpoint or spec path leaking in."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("AWS_ENDPOINT_URL", "DYNAMICS_SPEC"):
        env.pop(var, None)
    return env
