"""Hostile spec files and `--set` values: alias bombs, deep nesting, huge integers, duplicate keys, tags, huge or
non-regular files, long strings.

Each fails in `validate` and `dynamics-submit --dry-run` with exit 2, one message and no traceback,
before anything is built from it (a hang would hit the subprocess timeout).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dynamics.errors import SpecError
from dynamics.spec.limits import MAX_BYTES, MAX_DEPTH, MAX_INT_DIGITS
from dynamics.spec.loader import load_spec, load_spec_text, parse_yaml
from dynamics.spec.overrides import apply_sets

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


def _long_string(field: str, value: str) -> str:
    """The quickstart with ``field`` (``name`` or ``storage.workdir``) set to ``value`` repeated up to the cap."""
    old = {"name": "name: quickstart\n", "workdir": "  workdir: runs\n"}[field]
    head = old.split(":")[0] + ": \""
    room = MAX_BYTES - len(QUICKSTART.encode()) + len(old) - len(head) - 2
    return QUICKSTART.replace(old, head + (value * room)[:room] + "\"\n", 1)


@pytest.mark.parametrize(("field", "value"), [("name", "a"), ("workdir", "a"), ("workdir", "s3://a:b"),
                                               ("workdir", "x://a:"), ("workdir", "AKIA")])
def test_validation_is_linear_in_the_spec_size(field: str, value: str) -> None:
    """A spec at the size cap made of one long string validates (or is refused) in well under a second of
    CPU: every check is linear (the credential-in-URL regex was quadratic and took minutes)."""
    text = _long_string(field, value)
    assert MAX_BYTES - 4 <= len(text.encode()) <= MAX_BYTES
    start = time.process_time()
    with contextlib.suppress(SpecError):
        load_spec_text(text, "long.yaml")
    assert time.process_time() - start < 1.0


def test_long_name_is_not_repeated_in_the_message() -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(_long_string("name", "a"), "long.yaml")
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize(("item", "expected"), [
    ("train.seed=" + "9" * 100_000, f"at most {MAX_INT_DIGITS} are accepted"),
    ("kubernetes.affinity=" + "[" * 5000 + "]" * 5000, "nesting depth"),
    ("kubernetes.affinity=" + "{a: " * 70 + "1" + "}" * 70, "nesting depth"),
    ("kubernetes.affinity={a: 1, a: 2}", "key 'a' appears twice"),
    ("name=!!binary cXVpY2tzdGFydA==", "the tag !!binary at line 1 is not accepted"),
    ("name=!!python/name:os.system x", "is not accepted"),
    (".".join(["a"] * 100_000) + "=1", "nesting depth"),
    ("train.phases[" + "9" * 100_000 + "].lr=1", "is not a field name"),
    ("name=" + "x" * (MAX_BYTES + 1), "bytes; at most"),
])
def test_set_values_get_the_spec_file_limits(item: str, expected: str) -> None:
    """`--set` values go through the spec-file loader: same limits, same messages, no traceback."""
    with pytest.raises(SpecError) as info:
        apply_sets({"name": "a", "kubernetes": {}}, [item])
    assert expected in str(info.value)
    assert len(str(info.value)) < 2000


def test_alias_bomb_in_set_value() -> None:
    bomb = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]) + "]"
    with pytest.raises(SpecError, match="anchors and aliases"):
        apply_sets({}, ["kubernetes.affinity=" + bomb])


def test_binary_tag_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(QUICKSTART.replace("name: quickstart\n", "name: !!binary cXVpY2tzdGFydA==\n", 1))
    with pytest.raises(SpecError, match="tag !!binary at line"):
        load_spec(path)
    assert parse_yaml("a: !!str 1\nb: !!int '2'\n", "s") == {"a": "1", "b": 2}


@pytest.mark.parametrize("kind", ["dev-zero", "fifo-no-writer", "fifo-stuck-writer", "directory"])
def test_non_regular_spec_paths_are_read_with_a_cap_and_never_block(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dynamics.spec.yamlsafe.PIPE_TIMEOUT_S", 0.5)
    path = tmp_path / "spec"
    writer = None
    if kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
        if kind == "fifo-stuck-writer":  # holds the FIFO open and writes nothing
            writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    expected = {"dev-zero": "bytes; at most", "fifo-no-writer": "is empty",
                "fifo-stuck-writer": "nothing more to read", "directory": "is a directory"}[kind]
    try:
        with pytest.raises(SpecError, match=expected):
            load_spec(path)
    finally:
        if writer is not None:
            os.close(writer)


def test_a_pipe_with_a_spec_is_read() -> None:
    """`dynamics validate <(cat spec.yaml)`: a pipe whose writer is there is read whole."""
    read, write = os.pipe()
    os.write(write, QUICKSTART.encode())
    os.close(write)
    try:
        assert load_spec(f"/proc/self/fd/{read}").name == "quickstart"
    finally:
        os.close(read)
