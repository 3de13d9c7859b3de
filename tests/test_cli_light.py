"""``--help`` and usage errors of every command load no heavy module (torch, open_clip, faiss).

One subprocess runs every command in turn and reports which heavy modules each one loaded first: a
command that imports torch to print its usage shows up by name (no timing assert: torch alone takes
seconds to import, the rest well under one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dynamics.cli.app import STAGES, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "open_clip", "faiss", "transformers", "sklearn")

PROBE = """
import contextlib, io, json, sys
from dynamics.cli.app import main, submit_main
heavy = {heavy!r}
out = {{}}
seen = set()
for entry, argv in {commands!r}:
    fn = submit_main if entry == "dynamics-submit" else main
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            code = fn(argv)
        except SystemExit as exc:
            code = exc.code
    out[" ".join([entry, *argv])] = [code, [m for m in heavy if m in sys.modules and m not in seen]]
    seen = {{m for m in heavy if m in sys.modules}}
print(json.dumps(out))
"""


def _commands() -> list[tuple[str, list[str]]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    names = [n for n in sub.choices if n != "stage"]
    commands = [("dynamics", ["--help"]), ("dynamics", ["--version"]), ("dynamics-submit", ["--help"]),
                ("dynamics-submit", []), ("dynamics", ["stage", "--help"])]
    commands += [("dynamics", [n, "--help"]) for n in names]
    no_args = ("list", "doctor", "controller", "schema")  # the commands that run without arguments
    commands += [("dynamics", [n]) for n in names if n not in no_args]  # usage errors: a missing argument
    commands += [("dynamics", [n, "--no-such-option"]) for n in names]
    commands += [("dynamics", ["stage", s, "--help"]) for s in STAGES]
    commands += [("dynamics", ["stage", s, "--no-such-option"]) for s in STAGES]
    commands += [("dynamics", ["experiment", "longtail", "--help"])]
    return commands


def test_help_and_usage_errors_load_no_heavy_module() -> None:
    commands = _commands()
    code = PROBE.format(heavy=HEAVY, commands=commands)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    assert len(results) == len(commands)
    loaded = {cmd: mods for cmd, (_, mods) in results.items() if mods}
    assert not loaded, f"commands that loaded heavy modules for --help or a usage error: {loaded}"
    for cmd, (exit_code, _) in results.items():
        expected = 0 if cmd.endswith(("--help", "--version")) else 2
        assert exit_code == expected, f"{cmd}: exit {exit_code}"
