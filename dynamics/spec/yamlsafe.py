"""The one way user-given YAML is read: spec files, ``--set`` values and spec text from a ConfigMap.

Every path goes through :func:`dynamics.spec.limits.load_limited` (size, depth, tags, alias expansion,
integer length, duplicate keys), so a hostile value is refused with the same message wherever it comes
from. Files are read with a cap and without blocking: ``/dev/zero`` stops at the size limit, a FIFO with
no writer reads as empty, a slow pipe (``<(...)``) gets :data:`PIPE_TIMEOUT_S` seconds.
"""

from __future__ import annotations

import os
import select
import stat
import time
from pathlib import Path
from typing import Any

import yaml

from dynamics.errors import SpecError
from dynamics.spec.limits import MAX_BYTES, MAX_DEPTH, check_size, load_limited

PIPE_TIMEOUT_S = 10.0  # a pipe or device that has not delivered the spec by then never will
_CHUNK = 64 * 1024


def parse_yaml(text: str, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse YAML within the spec limits; syntax errors become a SpecError with line and column."""
    try:
        return load_limited(text, source, max_depth)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(f"{source}: YAML syntax error at {where}: {exc.problem}",
                        hint="fix the YAML syntax (indentation, colons, quotes)") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from exc


def _too_big(source: str) -> SpecError:
    return SpecError(f"{source}: the spec is more than {MAX_BYTES:,} bytes; at most {MAX_BYTES:,} are accepted",
                     hint="a run spec is a few KB: check that this is the right file")


def _read_capped(fd: int, source: str, blocking: bool) -> bytes:
    """At most MAX_BYTES + 1 bytes of ``fd`` (one more shows it is too big); pipes wait at most PIPE_TIMEOUT_S."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + PIPE_TIMEOUT_S
    while size <= MAX_BYTES:
        try:
            chunk = os.read(fd, min(_CHUNK, MAX_BYTES + 1 - size))
        except BlockingIOError:
            left = deadline - time.monotonic()
            if blocking or left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SpecError(f"{source}: nothing more to read after {PIPE_TIMEOUT_S:.0f} s (a pipe or device "
                                "whose writer is stuck)", hint="pass the path of a run spec YAML file") from None
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_BYTES:
        raise _too_big(source)
    return b"".join(chunks)


def read_spec_text(path: str | Path) -> str:
    """The text of a spec file, read with the size cap and never blocking (FIFOs, devices, pipes)."""
    p = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise SpecError(f"spec file '{p}' not found", hint="pass the path of a run spec YAML") from exc
    except OSError as exc:
        raise SpecError(f"cannot read spec file '{p}': {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(f"'{p}' is a directory, not a spec file", hint="pass the path of a run spec YAML")
        regular = stat.S_ISREG(mode)
        if regular:
            check_size(os.fstat(fd).st_size, str(p))  # before reading a huge file into memory
            os.set_blocking(fd, True)
        data = _read_capped(fd, str(p), blocking=regular)
    except OSError as exc:
        raise SpecError(f"cannot read spec file '{p}': {exc.strerror}") from exc
    finally:
        os.close(fd)
    if not data.strip():
        raise SpecError(f"{p}: the spec file is empty" + ("" if regular else " (a pipe or FIFO without a writer "
                        "reads as empty)"), hint="pass the path of a run spec YAML, e.g. examples/quickstart.yaml")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"cannot read spec file '{p}': not UTF-8 text ({exc.reason} at byte {exc.start})",
                        hint="save the spec as UTF-8") from exc


def parse_value(raw: str, source: str, depth_used: int) -> Any:
    """A ``--set`` value as YAML (``0.5`` a number, ``[a, b]`` a list), under the same limits as a spec file;
    ``depth_used`` levels of the spec are already taken by the value's path."""
    if not raw.strip():
        return ""
    if depth_used >= MAX_DEPTH:
        raise SpecError(f"{source}: maximum nesting depth ({MAX_DEPTH}) exceeded by the path",
                        hint="a run spec nests a few levels only")
    return parse_yaml(raw, source, max_depth=MAX_DEPTH - depth_used)
