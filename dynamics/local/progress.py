"""Progress display of ``--local``: rich progress bars in a terminal, plain lines elsewhere (CI logs)."""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, Protocol

from dynamics.constants import Stage

if TYPE_CHECKING:
    from dynamics.local.procs import Proc, StageRun

TICK_SECONDS = 2.0
# "2026-01-01T00:00:00 INFO dynamics.train: " -- the message after it is what matters here.
_LOG_PREFIX = re.compile(r"^\S+ (INFO|WARNING|ERROR|DEBUG) [\w.]+: ")


def last_message(proc: Proc) -> str:
    """The newest log line of a process without its timestamp/level prefix."""
    tail = proc.tail(1)
    return _LOG_PREFIX.sub("", tail[0])[:200] if tail else ""


class Reporter(Protocol):
    """What the local runner tells the user."""

    def say(self, text: str) -> None: ...
    def stage_started(self, stage: Stage, n_procs: int) -> None: ...
    def proc_done(self, run: StageRun, proc: Proc) -> None: ...
    def tick(self, run: StageRun, running: list[Proc]) -> None: ...
    def stage_finished(self, stage: Stage, ok: bool) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """One line per event, and every new log line of the running processes, prefixed by process (like
    ``kubectl logs --prefix``): each line once, none dropped."""

    def __init__(self) -> None:
        self.last_tick = 0.0

    def say(self, text: str) -> None:
        print(text, flush=True)

    def stage_started(self, stage: Stage, n_procs: int) -> None:
        self.say(f"- {stage.value}: {n_procs} process{'es' if n_procs > 1 else ''} ...")

    def _show_new(self, proc: Proc) -> None:
        for line in proc.new_lines():
            message = _LOG_PREFIX.sub("", line).rstrip()
            if message:
                self.say(f"  [{proc.label}] {message[:300]}")

    def proc_done(self, run: StageRun, proc: Proc) -> None:
        self._show_new(proc)  # its last lines, written after the previous tick
        if len(run.procs) > 1:
            self.say(f"  [{run.stage.value}] {proc.label} done in {time.monotonic() - proc.started:.1f}s "
                     f"({len(run.done)}/{len(run.procs)})")

    def tick(self, run: StageRun, running: list[Proc]) -> None:
        now = time.monotonic()
        if now - self.last_tick < TICK_SECONDS or not running:
            return
        self.last_tick = now
        for proc in running:
            self._show_new(proc)

    def stage_finished(self, stage: Stage, ok: bool) -> None:
        """Nothing to close in plain mode; the runner prints the outcome."""

    def close(self) -> None:
        """Nothing to close in plain mode."""


class RichReporter:
    """A progress bar per stage (indexes done / total) with the stage's newest log line beside it."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<12}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
        self.tasks: dict[Stage, int] = {}
        self.progress.start()

    def say(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def stage_started(self, stage: Stage, n_procs: int) -> None:
        self.tasks[stage] = self.progress.add_task(stage.value, total=n_procs, last="")

    def proc_done(self, run: StageRun, proc: Proc) -> None:
        self.progress.advance(self.tasks[run.stage])

    def tick(self, run: StageRun, running: list[Proc]) -> None:
        if running:
            self.progress.update(self.tasks[run.stage], last=last_message(running[0])[:80])

    def stage_finished(self, stage: Stage, ok: bool) -> None:
        self.progress.update(self.tasks[stage], last="done" if ok else "FAILED")

    def close(self) -> None:
        self.progress.stop()


def make_reporter() -> Reporter:
    """Rich bars on an interactive terminal; plain lines when output is a file or a CI log."""
    return RichReporter() if sys.stdout.isatty() else PlainReporter()
