"""Hostile spec files: alias bombs, deep nesting, huge integers, duplicate keys, huge files.

Each fails in `validate` and `dynamics-submit --dry-run` with exit 2, one message and no traceback,
before anything is built from it (a hang would hit the subprocess timeout).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dynamics.errors import SpecError
from dynamics.spec.limits import MAX_DEPTH, MAX_INT_DIGITS
from dynamics.spec.loader import load_spec, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUICKSTART = (ROOT / "examples" / "quickstart.yaml").read_text()


def _affinity(lines: list[str]) -> str:
    """The quickstart with ``lines`` as its (free-form) ``kubernetes.affinity``."""
    assert "\nkubernetes:\n" in QUICKSTART
    return QUICKSTART.replace("\nkubernetes:\n", "\nkubernetes:\n  affinity:\n" + "".join(
        f"    {line}\n" for line in lines), 1)


def _alias_bomb() -> str:
    """About 1 KB that expands to 10^9 values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return _affinity(lines)


def _deep() -> str:
    return _affinity(["x: " + "[" * 1000 + "]" * 1000])


def _big_int() -> str:
    assert "  seed: 42\n" in QUICKSTART
    return QUICKSTART.replace("  seed: 42\n", "  seed: " + "9" * 100_000 + "\n", 1)


def _duplicate() -> str:
    return "name: first\n" + QUICKSTART


def _huge() -> str:
    return QUICKSTART + "\n# " + "x" * (50 * 1024 * 1024) + "\n"


HOSTILE = {
    "alias-bomb": (_alias_bomb, "anchors and aliases"),
    "deep": (_deep, "nesting depth"),  # libyaml's own limit (1000) or ours
    "big-int": (_big_int, f"at most {MAX_INT_DIGITS} are accepted"),
    "duplicate-key": (_duplicate, "appears twice, at line 1 and line"),
    "huge": (_huge, "bytes; at most"),
}


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hostile")
    files = {}
    for name, (make, _) in HOSTILE.items():
        files[name] = out / f"{name}.yaml"
        files[name].write_text(make())
    return files


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_loader_refuses_hostile_spec(name: str, hostile_files: dict[str, Path]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(hostile_files[name])
    assert HOSTILE[name][1] in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("command", [["dynamics", "validate"], ["dynamics-submit", "--dry-run"]])
def test_cli_refuses_hostile_spec(name: str, command: list[str], hostile_files: dict[str, Path]) -> None:
    argv = [str(BIN / command[0]), *command[1:], str(hostile_files[name])]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and HOSTILE[name][1] in result.stderr
    assert result.stdout == ""


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(SpecError, match=r"key 'b' appears twice, at line 2 and line 4"):
        parse_yaml("a: 1\nb: 2\nc:\nb: 3\n", "s.yaml")


def test_limits_leave_ordinary_yaml_alone() -> None:
    text = "base: &b {x: 1, y: [1, 2]}\nother: *b\nmerged:\n  <<: *b\n  x: 2\nbig: 12345678901234567890\n"
    assert parse_yaml(text, "s.yaml") == yaml.safe_load(text)
    nested = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_yaml(nested, "s.yaml") == yaml.safe_load(nested)


def test_too_many_values_without_anchors_does_not_blame_anchors() -> None:
    from dynamics.spec.limits import MAX_NODES

    text = _affinity(["x: [" + ", ".join(["1"] * (MAX_NODES + 10)) + "]"])
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "spec.yaml")
    assert f"more than {MAX_NODES:,} values" in str(info.value)
    assert "anchor" not in str(info.value).lower() and "alias" not in str(info.value).lower()
