"""Each image's commands start with only what that image installs (the controller: no torch, PIL, faiss).

No Docker engine runs here, so an image is played by this environment with every module that the
image's install would not bring in made unimportable: importing one fails as it would in the image.
The commands are the ones the manifests and the chart run in each image (with ``--help``: the command's
module and everything it imports at start are loaded), plus what a user runs from the controller image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.images.test_images import (
    CHART_COMMANDS,
    COMMANDS,
    ROOT,
    image_extras,
    installed_by,
    module_providers,
    programs,
)

# Run as `python -c`: hide the modules named in argv[1] (JSON), then run the console script argv[2].
PLAYER = """
import importlib.machinery, json, sys
hidden = set(json.loads(sys.argv[1]))
class Absent:
    # Stands in for the path finder: a hidden module is not found at all (find_spec gives None, an import
    # raises ModuleNotFoundError), exactly as where it is not installed.
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in hidden:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)
    @staticmethod
    def invalidate_caches():
        importlib.machinery.PathFinder.invalidate_caches()
sys.meta_path[:] = [Absent if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
from dynamics.cli.app import main, submit_main
sys.argv = sys.argv[2:]
sys.exit(submit_main() if sys.argv[0] == "dynamics-submit" else main())
"""


def hidden_modules(image: str) -> list[str]:
    """Top-level modules installed here that only distributions outside ``image`` provide."""
    have = installed_by(tuple(image_extras(image)))
    return sorted(m for m, dists in module_providers().items()
                  if not m.startswith("_") and not any(canonicalize_name(d) in have for d in dists))


def play(image: str, *argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a console script of the package and its arguments) as in ``image``."""
    return subprocess.run([sys.executable, "-c", PLAYER, json.dumps(hidden_modules(image)), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                            "PYTHONPATH": str(ROOT)})


def test_the_player_hides_what_the_image_lacks() -> None:
    hidden = hidden_modules("controller")
    assert {"torch", "PIL", "pyarrow", "faiss", "open_clip"} <= set(hidden)
    assert not {"pydantic", "yaml", "kubernetes", "boto3", "numpy"} & set(hidden)
    code = f"{PLAYER.split('from dynamics')[0]}\nimport PIL"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(hidden)], capture_output=True, text=True,
                          timeout=60)
    assert "No module named 'PIL'" in proc.stderr


def _package_commands() -> list[tuple[str, tuple[str, ...]]]:
    """(image, the package's command without its options) for every command run in an image."""
    out: set[tuple[str, tuple[str, ...]]] = set()
    for _, image, command in COMMANDS + CHART_COMMANDS:
        for program in programs(command):
            if program[0] == "dynamics":
                words = program[:3] if program[1] == "stage" else program[:2]
                out.add((image, tuple(words)))
    return sorted(out)


PACKAGE_COMMANDS = _package_commands()


@pytest.mark.parametrize(("image", "command"), PACKAGE_COMMANDS,
                         ids=[f"{image}-{'-'.join(c[1:])}" for image, c in PACKAGE_COMMANDS])
def test_commands_the_manifests_run_start_in_their_image(image: str, command: tuple[str, ...]) -> None:
    proc = play(image, *command, "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("argv", [
    ("dynamics", "--help"),
    ("dynamics-submit", "examples/datacomp-dfn-vitb16.yaml", "--dry-run", "--offline"),
    ("dynamics", "estimate", "examples/datacomp-dfn-vitb16.yaml", "--params", "149620737"),
    ("dynamics", "schema"),
])
def test_user_commands_work_in_the_controller_image(argv: tuple[str, ...]) -> None:
    proc = play("controller", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_estimate_without_torch_says_how_to_count_parameters() -> None:
    proc = play("controller", "dynamics", "estimate", "examples/datacomp-dfn-vitb16.yaml")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "--params" in proc.stderr
