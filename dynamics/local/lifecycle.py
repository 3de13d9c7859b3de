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
# Every process of a local run carries its run's identity (the run's state directory) in this variable:
# a rerun finds them by it even when the record of their PIDs was lost (killed before it was written).
ENV_RUN_ID = "DYNAMICS_LOCAL_RUN"

# Run by `python -S -c` in front of a command, before anything is imported: bind this process to its
# parent (the parent-death signal, then a check that the parent is still of this run, which catches a
# parent that died before the signal was armed), then exec the command (exec keeps the signal armed).
BIND_PREAMBLE = f"""\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
want = os.environ.get("{ENV_RUN_ID}", "")
try:
    with open("/proc/%d/environ" % os.getppid(), "rb") as fh:
        mine = ("{ENV_RUN_ID}=" + want).encode() in fh.read().split(b"\\0")
except OSError:
    mine = False
if not want or not mine:
    os._exit(137)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def bound_command(command: list[str], python: str) -> list[str]:
    """``command`` with the processes that torchrun starts bound to it from their first instruction.

    torchrun starts its workers in sessions of their own, so a kill of the runner's process group
    misses them, and the trainer can only arm its parent-death signal after seconds of imports. With
    ``--no-python ENTRY ARGS`` torchrun runs ENTRY itself; it becomes ``python -S -c BIND_PREAMBLE ENTRY
    ARGS``. Commands of other shapes are returned unchanged. Pure.
    """
    if not command or os.path.basename(command[0]) != "torchrun" or "--no-python" not in command:
        return list(command)
    at = command.index("--no-python") + 1
    if at >= len(command):
        return list(command)
    return [*command[:at], python, "-S", "-c", BIND_PREAMBLE, *command[at:]]


def die_with_parent(sig: signal.Signals = signal.SIGKILL, parent: int | None = None) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits.

    torchrun starts its workers in sessions of their own, so killing the runner's process group
    misses them; with this they end with their parent however it ends (even SIGKILL). ``parent``:
    the PID the parent must have (a forked loader worker passes its trainer's); when the parent is
    already another one (it died before the signal was armed), this process ends at once.
    """
    parent = os.getppid() if parent is None else parent
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


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(_PROC / str(pid) / "environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:  # gone, or another user's: not ours either way
        return False


def run_processes(run_id: str) -> list[ProcId]:
    """Live processes carrying ``ENV_RUN_ID=run_id`` (this process and its ancestors excluded)."""
    if not _PROC.is_dir():
        return []
    entry = f"{ENV_RUN_ID}={run_id}".encode()
    skip, pid = set(), os.getpid()
    while pid > 1 and pid not in skip:  # ourselves and our ancestors: never ours to stop
        skip.add(pid)
        stat = _stat(pid)
        pid = stat[0] if stat else 0
    out = []
    for name in os.listdir(_PROC):
        if name.isdigit() and int(name) not in skip and _environ_has(int(name), entry):
            found = proc_id(int(name))
            if found is not None:
                out.append(found)
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

    @property
    def run_id(self) -> str:
        """The identity every process of this run carries in ``ENV_RUN_ID``: its state directory."""
        return str(self.path.parent.resolve())

    def stop_orphans(self) -> list[ProcId]:
        """Stop processes a previous (dead) runner of this run left behind; returns those stopped.

        Those recorded, and those carrying this run's identity in their environment (found even when the
        record was lost: a process started after the runner's last record, or the record cut short)."""
        try:
            recorded = json.loads(self.pids_path.read_text(encoding="utf-8"))
            procs = [ProcId(int(p["pid"]), int(p["start"])) for p in recorded]
        except FileNotFoundError:
            procs = []
        except (ValueError, KeyError, TypeError):
            procs = []  # a record cut short by the kill: nothing trustworthy to act on
        procs += [p for p in run_processes(self.run_id) if p not in procs]
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
