"""Human-readable progress: controller log lines and the ``dynamics status`` table. Pure."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping

from dynamics.constants import Stage
from dynamics.controller.state import Phase, RunStatus, StageState


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


def describe_changes(previous: RunStatus | None, current: RunStatus) -> list[str]:
    """Log lines for what changed between two statuses (stage transitions and progress)."""
    lines = []
    for state in current.stages:
        before = previous.stage_state(state.stage) if previous else None
        if before == state or (before is None and state.phase is Phase.PENDING):
            continue
        lines.append(stage_line(state))
    if current.phase.terminal and (previous is None or previous.phase != current.phase):
        lines.append(f"run {current.phase.value.lower()}" + (f": {current.reason}" if current.reason else ""))
    return lines


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
    """The ``dynamics status`` output: a header line, a stage table, and the failure reason."""
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
    return "\n".join(lines)
