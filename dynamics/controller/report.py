"""Human-readable progress: controller log lines, Kubernetes Event texts and the ``dynamics status``
table. Pure."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from dynamics.constants import Stage
from dynamics.controller.state import Phase, RunStatus, StageState


class EventReason(StrEnum):
    """``reason`` of the Events the controller records on the run ConfigMap."""

    STAGE_STARTED = "StageStarted"
    STAGE_SUCCEEDED = "StageSucceeded"
    STAGE_FAILED = "StageFailed"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"


@dataclass(frozen=True)
class RunEvent:
    """One Event to record: its reason and message (failures are ``Warning`` events)."""

    reason: EventReason
    message: str
    stage: Stage | None = None  # None: about the whole run

    @property
    def key(self) -> str:
        """What makes this Event unique within one submission of a run: each stage starts, succeeds
        or fails once, the run ends once (the message may differ between passes: "stuck for 959s")."""
        return f"{self.reason.value}/{self.stage.value if self.stage else ''}"

    @property
    def type(self) -> str:
        """``Normal`` or ``Warning``, the two Event types."""
        return "Warning" if self.reason in (EventReason.STAGE_FAILED, EventReason.RUN_FAILED) else "Normal"


def _progress(state: StageState) -> str:
    if not state.total:
        return "-"
    return f"{state.done}/{state.total}"


def stage_line(state: StageState) -> str:
    """One stage's state in a sentence: ``stage embed: Running 3/10 done, 7 active (job/x-embed)``."""
    where = f" ({state.object})" if state.object else ""
    if state.phase is Phase.FAILED:
        return f"stage {state.stage.value}: Failed{where}: {state.reason}"
    if state.phase is Phase.RUNNING:
        counts = f"{_progress(state)} done, {state.active} active"
        if state.failed:
            counts += f", {state.failed} failed (retrying)"
        return f"stage {state.stage.value}: Running {counts}{where}"
    return f"stage {state.stage.value}: {state.phase.value} {_progress(state)}{where}"


def failure_details(state: StageState) -> list[str]:
    """A failed stage's pods (container, exit code, reason, message) and the first one's log tail."""
    if not state.pods:
        return []
    lines = [f"failed pods of stage {state.stage.value}:"]
    for pod in state.pods:
        container = f" (container {pod.container})" if pod.container else ""
        message = f": {pod.message}" if pod.message else ""
        lines.append(f"  {pod.pod}{container}: {pod.summary()}{message}")
    with_log = next((p for p in state.pods if p.log_tail), None)
    if with_log is not None:
        count = len(with_log.log_tail)
        lines.append(f"last {count} log line{'' if count == 1 else 's'} of {with_log.pod}:")
        lines += [f"  | {line}" for line in with_log.log_tail]
    return lines


def describe_changes(previous: RunStatus | None, current: RunStatus) -> list[str]:
    """Log lines for what changed between two statuses (stage transitions and progress, and a
    failed stage's pods and log tail)."""
    lines = []
    for state in current.stages:
        before = previous.stage_state(state.stage) if previous else None
        if before == state or (before is None and state.phase is Phase.PENDING):
            continue
        lines.append(stage_line(state))
        if state.phase is Phase.FAILED:
            lines += failure_details(state)
    if current.phase.terminal and (previous is None or previous.phase != current.phase):
        lines.append(f"run {current.phase.value.lower()}" + (f": {current.reason}" if current.reason else ""))
    return lines


def _stage_event(before: Phase, state: StageState) -> list[RunEvent]:
    where = f" ({state.object})" if state.object else ""
    name = state.stage.value
    events = []
    if before is Phase.PENDING and state.object is not None:
        events.append(RunEvent(EventReason.STAGE_STARTED, f"stage {name} started{where}", state.stage))
    if state.phase is Phase.SUCCEEDED:
        done = f" {_progress(state)}" if state.total else ""
        events.append(RunEvent(EventReason.STAGE_SUCCEEDED, f"stage {name} succeeded{done}{where}", state.stage))
    elif state.phase is Phase.FAILED:
        events.append(RunEvent(EventReason.STAGE_FAILED, f"stage {name} failed{where}: {state.reason}", state.stage))
    return events


def run_events(previous: RunStatus | None, current: RunStatus) -> list[RunEvent]:
    """Events for the transitions between two statuses: stages started, succeeded or failed, and
    the run's end. Level-triggered like the log lines: ``previous`` is the recorded status."""
    events = []
    for state in current.stages:
        before = previous.stage_state(state.stage) if previous else None
        before_phase = before.phase if before else Phase.PENDING
        if before_phase is not state.phase:
            events += _stage_event(before_phase, state)
    if current.phase.terminal and (previous is None or previous.phase != current.phase):
        if current.phase is Phase.SUCCEEDED:
            events.append(RunEvent(EventReason.RUN_SUCCEEDED, "run succeeded"))
        else:
            events.append(RunEvent(EventReason.RUN_FAILED, f"run failed: {current.reason or 'unknown reason'}"))
    return events


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    """``5s``, ``3m``, ``2h``, ``4d`` since an RFC 3339 timestamp."""
    if not timestamp:
        return "-"
    created = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or dt.datetime.now(dt.UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pods_cell(counts: Counter[str] | None) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def status_report(run: str, namespace: str, status: RunStatus, pods: Mapping[Stage, Counter[str]]) -> str:
    """The ``dynamics status`` output: a header line, a stage table, the one-line failure reason, and
    below it the failed stage's pods and log tail."""
    where = f" (stage {status.stage.value})" if status.stage and not status.phase.terminal else ""
    lines = [f"run {run} in namespace {namespace}: {status.phase.value}{where}", ""]
    rows = [["STAGE", "STATE", "PROGRESS", "OBJECT", "PODS"]]
    for state in status.stages:
        rows.append(
            [
                state.stage.value,
                state.phase.value,
                _progress(state),
                state.object or "-",
                _pods_cell(pods.get(state.stage)),
            ]
        )
    lines += _table(rows)
    if status.reason:
        lines += ["", f"reason: {status.reason}"]
    for state in status.stages:
        if details := failure_details(state):
            lines += ["", *details]
    return "\n".join(lines)
