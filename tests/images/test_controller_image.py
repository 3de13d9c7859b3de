"""The controller image's commands run with only what that image installs (no torch, PIL, pyarrow, faiss).

No Docker engine runs here, so the image is played by this environment with every module that the
image's install would not bring in made unimportable: importing one fails as it would in the image.
The commands are the ones the manifests and the chart run in that image, plus what a user runs from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.images.test_images import CHART_COMMANDS, COMMANDS, ROOT, image_extras, installed_by, module_providers

# Run as `python -c`: hide the modules named in argv[1] (JSON), then run the console script argv[2].
PLAYER = """
import json, sys
hidden = set(json.loads(sys.argv[1]))
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
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


CONTROLLER = sorted({tuple(c) for _, image, c in COMMANDS + CHART_COMMANDS if image == "controller"})


@pytest.mark.parametrize("command", CONTROLLER, ids=["-".join(c) for c in CONTROLLER])
def test_commands_the_manifests_run_start_in_the_controller_image(command: tuple[str, ...]) -> None:
    flags = [a for a in command[2:] if a.startswith("--")]
    proc = play("controller", *command[:2], "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for flag in flags:
        assert flag.split("=")[0] in proc.stdout, (flag, proc.stdout)


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
