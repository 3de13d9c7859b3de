"""Process lifecycle of a local run: the run lock, process trees, parent-death signals, orphans.

Linux only where it matters (``/proc``, ``prctl``); elsewhere the helpers degrade to no-ops so the
package still imports. A process is identified by ``(pid, start time)``: a PID alone may have been
reused by an unrelated process since it was recorded, and we must never signal that one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dynamics.errors import DynamicsError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PROC = Path("/proc")


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits.

    torchrun starts its workers in sessions of their own, so killing the runner's process group
    misses them; with this they end with their parent however it ends (even SIGKILL).
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: nothing to arm
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), sig)


@dataclass(frozen=True)
class ProcId:
    """A process as recorded: its PID and kernel start time (so a reused PID is not mistaken for it)."""

    pid: int
    start: int


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None  # a zombie is already dead; only its parent's wait() is missing
    return int(fields[1]), int(fields[19])


def proc_id(pid: int) -> ProcId | None:
    """The identity of a live process, or None when it is gone."""
    stat = _stat(pid)
    return ProcId(pid, stat[1]) if stat else None


def alive(p: ProcId) -> bool:
    """Whether this very process (same PID and start time) still runs."""
    now = proc_id(p.pid)
    return now is not None and now.start == p.start


def descendants(root: int) -> list[ProcId]:
    """Every live process below ``root`` in the process tree (children, grandchildren, ...)."""
    if not _PROC.is_dir():
        return []
    children: dict[int, list[ProcId]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(ProcId(int(entry.name), stat[1]))
    out: list[ProcId] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


def kill_all(procs: list[ProcId], grace: float = 5.0) -> list[ProcId]:
    """SIGTERM each still-live process, SIGKILL what is left after ``grace`` s; returns those signalled."""
    signalled = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if alive(p)]
        for p in live:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                continue
            if p not in signalled:
                signalled.append(p)
        deadline = time.monotonic() + (grace if sig is signal.SIGTERM else 5.0)
        while any(alive(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.05)
    return signalled


class RunLock:
    """An exclusive lock on one local run, held for the runner's lifetime.

    ``flock`` is released by the kernel when the holder dies, however it dies, so a killed runner
    never leaves a stale lock; the file's descriptor is not inherited by children (close-on-exec),
    so an orphaned child cannot keep it. The file also records the processes the run started,
    so that the next runner can stop any that outlived a killed one.
    """

    def __init__(self, state_dir: Path, run_name: str) -> None:
        self.path = state_dir / "run.lock"
        self.pids_path = state_dir / "pids.json"
        self.run_name = run_name
        self._fh: IO[str] | None = None
        self._recorded: list[ProcId] = []

    def acquire(self) -> None:
        """Take the lock or raise a DynamicsError naming the runner that holds it."""
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise DynamicsError(
                f"run '{self.run_name}' is already being run here by another runner (PID {holder})",
                hint=f"wait for it to finish, or stop it (kill {holder}) and run again") from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def stop_orphans(self) -> list[ProcId]:
        """Stop processes a previous (dead) runner of this run left behind; returns those stopped."""
        try:
            recorded = json.loads(self.pids_path.read_text(encoding="utf-8"))
            procs = [ProcId(int(p["pid"]), int(p["start"])) for p in recorded]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError):
            procs = []  # a record cut short by the kill: nothing trustworthy to act on
        stopped = kill_all([p for p in procs if alive(p)])
        self.pids_path.unlink(missing_ok=True)
        return stopped

    def record(self, procs: list[ProcId]) -> None:
        """Remember the run's processes (written only when the set changed)."""
        if procs == self._recorded:
            return
        self._recorded = list(procs)
        tmp = self.pids_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"pid": p.pid, "start": p.start} for p in procs]), encoding="utf-8")
        os.replace(tmp, self.pids_path)

    def release(self) -> None:
        """Forget the processes (they have ended) and drop the lock."""
        self.pids_path.unlink(missing_ok=True)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
