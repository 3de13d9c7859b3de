"""The processes of a local run: one per pod (or Indexed-Job index), grouped by stage."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.constants import Stage
from dynamics.local.lifecycle import descendants, die_with_parent, kill_all, proc_id

TAIL_LINES = 25
# The line that says what went wrong: our own "error: ..." message, or a Python exception line, possibly
# prefixed by torchrun's "[rank0]:". torchrun's own ChildFailedError report only says that a child failed.
_CAUSE = re.compile(r"^(?:\[(?:rank|default)\d+\]:\s*)?"
                    r"(error: .+|(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception)(?::.*)?)$")
_NOT_A_CAUSE = ("ChildFailedError", "torch.distributed.elastic")


def first_exception(lines: list[str]) -> str | None:
    """The first line of ``lines`` naming the real error (not torchrun's boilerplate about it)."""
    for line in lines:
        match = _CAUSE.match(line.strip())
        if match and not any(s in line for s in _NOT_A_CAUSE):
            return match.group(1)
    return None


@dataclass
class Proc:
    """One local process standing in for one pod (or one Indexed-Job index)."""

    label: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    shown: int = 0  # bytes of the log already shown live (see new_lines)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One log per attempt: the tail shown on failure is this attempt's.
        log = self.log_path.open("wb")
        # die_with_parent, armed between fork and exec against this runner's PID: if the runner is killed
        # (even SIGKILL, even before the signal was armed), its children end with it.
        bind = functools.partial(die_with_parent, parent=os.getpid())
        self.popen = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=bind)
        log.close()
        self.started = time.monotonic()

    def poll(self) -> int | None:
        assert self.popen is not None
        return self.popen.poll()

    def stop(self) -> None:
        """End this process and everything it started (torchrun's workers run in sessions of their own)."""
        if self.popen is None:
            return
        me = proc_id(self.popen.pid) if self.popen.poll() is None else None
        tree = descendants(self.popen.pid) + ([me] if me else [])
        kill_all(tree)
        if self.popen.poll() is None:
            self.popen.wait()

    def cause(self) -> str | None:
        """The first exception line of this process's log (None when there is none)."""
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as fh:
                return first_exception([line.rstrip("\n") for line in fh])
        except FileNotFoundError:
            return None

    def new_lines(self) -> list[str]:
        """Complete log lines written since the last call: each shown once, none skipped."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self.shown)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.shown += end
        return data[:end].decode("utf-8", errors="replace").splitlines()

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as fh:
                return list(deque((line.rstrip("\n") for line in fh), maxlen=n))
        except FileNotFoundError:
            return []


@dataclass
class StageRun:
    """Processes of one stage and how many may run at once."""

    stage: Stage
    procs: list[Proc]
    parallel: int
    failed: Proc | None = None
    done: list[Proc] = field(default_factory=list)
