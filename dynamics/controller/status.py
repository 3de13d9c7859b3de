"""``dynamics status NAME``, ``dynamics list`` and ``dynamics cancel NAME``.

``status`` reads the cluster the way the controller does (same pure decision code), so it shows
the right stage even before the controller has recorded anything; a terminal recorded status wins
(finished Jobs may have been removed by their TTL).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any, Literal, TextIO

import yaml

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.decide import run_status, stage_states
from dynamics.controller.kube import Kube, KubeApiError
from dynamics.controller.report import age, status_report
from dynamics.controller.resources import CONFIG_MAPS, JOBS, PODS
from dynamics.controller.runs import (
    RUNS_SELECTOR,
    delete_run,
    now_utc,
    observe,
    require_run,
    run_selector,
    workload_events,
)
from dynamics.controller.state import Phase, RunStatus
from dynamics.controller.stuck import controller_trouble
from dynamics.spec import names


def pods_by_stage(kube: Kube, run: str) -> dict[Stage, Counter[str]]:
    """Pod phases of the run, counted per stage (pods carry the ``dynamics.io/stage`` label)."""
    counts: dict[Stage, Counter[str]] = defaultdict(Counter)
    stages = {s.value: s for s in Stage}
    for pod in kube.list(PODS, run_selector(run)):
        stage = stages.get((pod["metadata"].get("labels") or {}).get(C.LABEL_STAGE, ""))
        if stage is not None:
            counts[stage][(pod.get("status") or {}).get("phase", "Unknown")] += 1
    return counts


def controller_problem(kube: Kube, run: str) -> str | None:
    """Why the run's controller is not running (see :func:`controller_trouble`), read from its Job,
    pods and Events; None when it runs, or when the user may not read them."""
    selector = f"{run_selector(run)},{C.LABEL_COMPONENT}={C.COMPONENT_CONTROLLER}"
    try:
        jobs = kube.list(JOBS, selector)
        pods = kube.list(PODS, selector)
    except KubeApiError as err:
        if err.status != 403:
            raise
        return None
    job = next((j for j in jobs if j["metadata"]["name"] == names.controller_job(run)), None)
    events = workload_events(kube, job, pods) if job is not None else []
    return controller_trouble(job, pods, events, now_utc())


def current_status(kube: Kube, run: str) -> RunStatus:
    """The run's status now: recomputed from live objects unless the recorded one is terminal; while
    it is not, a controller that cannot run is named in the reason (nobody else would say so)."""
    record = require_run(kube, run)
    if record.recorded is not None and record.recorded.phase.terminal:
        return record.recorded
    status = run_status(stage_states(record.spec, observe(kube, record, view=True)))
    if status.phase.terminal or (problem := controller_problem(kube, run)) is None:
        return status
    reason = f"the run's controller is not running: {problem}"
    return replace(status, reason=f"{reason}; {status.reason}" if status.reason else reason)


def show_status(kube: Kube, run: str, out: TextIO) -> int:
    """Print the stage table; exit code 0 unless the run failed (1)."""
    status = current_status(kube, run)
    print(status_report(run, kube.namespace, status, pods_by_stage(kube, run)), file=out)
    return 1 if status.phase is Phase.FAILED else 0


ListFormat = Literal["table", "wide", "name", "json", "yaml"]


def _run_rows(config_maps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for cm in config_maps:
        recorded = RunStatus.loads((cm.get("data") or {}).get(C.CONFIG_STATUS_KEY))
        out.append({"name": cm["metadata"]["name"], "phase": recorded.phase.value if recorded else Phase.PENDING.value,
                    "stage": recorded.stage.value if recorded and recorded.stage else None,
                    "created": cm["metadata"].get("creationTimestamp"),
                    "reason": recorded.reason if recorded else None})
    return out


def list_runs(kube: Kube, out: TextIO, output: ListFormat = "table") -> int:
    """Print every run in the namespace with its recorded phase and stage (``-o`` as in kubectl)."""
    runs = _run_rows(kube.list(CONFIG_MAPS, RUNS_SELECTOR))
    if output in ("json", "yaml"):
        doc = {"namespace": kube.namespace, "runs": runs}
        print(json.dumps(doc, indent=2) if output == "json" else yaml.safe_dump(doc, sort_keys=False).rstrip(),
              file=out)
        return 0
    if output == "name":
        for run in runs:
            print(run["name"], file=out)
        return 0
    if not runs:
        print(f"no runs in namespace {kube.namespace}", file=out)
        return 0
    wide = output == "wide"
    rows = [("NAME", "PHASE", "STAGE", "AGE", *(("CREATED", "REASON") if wide else ()))]
    for r in runs:
        rows.append((r["name"], r["phase"], r["stage"] or "-", age(r["created"]),
                     *((r["created"] or "-", r["reason"] or "-") if wide else ())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def cancel_run(kube: Kube, run: str, out: TextIO, *, timeout_s: float = 300.0, interval_s: float = 1.0) -> int:
    """Delete the run ConfigMap (its objects follow by garbage collection) and wait until all are gone."""
    require_run(kube, run)
    print(f"cancelling run {run} in namespace {kube.namespace} ...", file=out, flush=True)
    count = delete_run(kube, run, timeout_s=timeout_s, interval_s=interval_s)
    print(f"cancelled run {run}: deleted its ConfigMap and {count} objects", file=out)
    return 0


def status_json(kube: Kube, run: str) -> str:
    """The status as JSON (``dynamics status NAME -o json``)."""
    return json.dumps(current_status(kube, run).to_json(), indent=2)


def status_yaml(kube: Kube, run: str) -> str:
    """The status as YAML (``dynamics status NAME -o yaml``): the same document as ``-o json``."""
    return yaml.safe_dump(current_status(kube, run).to_json(), sort_keys=False).rstrip()


def show_status_wide(kube: Kube, run: str, out: TextIO) -> int:
    """The stage table plus every stage's counts (done/active/failed of total) and reason."""
    code = show_status(kube, run, out)
    print("\nSTAGE         DONE  ACTIVE  FAILED  TOTAL  REASON", file=out)
    for s in current_status(kube, run).stages:
        print(f"{s.stage.value:<12}  {s.done:>4}  {s.active:>6}  {s.failed:>6}  {s.total:>5}  {s.reason or '-'}",
              file=out)
    return code
