"""``dynamics controller --run NAME``: drive a run's stages to the end (the in-cluster controller).

Each pass reads everything from the cluster (the run ConfigMap and the run's objects by label),
asks the pure :func:`~dynamics.controller.decide.next_actions` what to do, does it, and waits: a
short interval after a change, backing off (doubling up to a maximum) while nothing changes. The
controller keeps no state between passes, so a killed controller can be started again at any
moment: it re-reads the cluster and continues without creating duplicates.

Besides the stages' objects and ``status.json``, the controller records each stage transition as a
Kubernetes Event on the run ConfigMap and, once at start, writes the resolved spec to
``<workdir>/<run>/spec.yaml``; both are best effort (a warning, never a failed run).
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from dataclasses import dataclass
from enum import StrEnum

from dynamics.constants import Stage
from dynamics.controller.decide import (
    Action,
    CreateObject,
    Finish,
    Release,
    WriteStatus,
    next_actions,
    refused_status,
    rejected,
)
from dynamics.controller.kube import Kube, KubeApiError
from dynamics.controller.report import RunEvent, describe_changes, run_events
from dynamics.controller.resources import BY_KIND, Propagation
from dynamics.controller.runs import (
    RunRecord,
    claimant_label,
    event_object,
    observe,
    read_run,
    with_owner,
    write_status,
)
from dynamics.controller.state import Obj, Phase, RunStatus, object_ref
from dynamics.errors import KubeError, StorageError
from dynamics.spec.checks import cluster_storage_problems
from dynamics.spec.loader import dump_spec
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.storage import claims
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.controller")

# A failed run exits with 2: the controller Job's podFailurePolicy fails the Job at once on exit
# code 2 (retrying cannot help), so `kubectl get jobs` shows the failure too.
EXIT_SUCCEEDED = 0
EXIT_FAILED = 2
# Errors that retrying cannot fix: missing RBAC, an object the API server rejects.
FATAL_STATUSES = (400, 403, 422)
# 401 is retried for a while: a projected ServiceAccount token is rotated on disk (the client reloads
# it) and a token just revoked by a re-created ServiceAccount is replaced within a minute or two.
UNAUTHORIZED = 401
MAX_UNAUTHORIZED_PASSES = 10
# After the run ended, queued Events (RunSucceeded, RunFailed) get this many more passes to be sent.
MAX_FINAL_EVENT_TRIES = 5


def write_resolved_spec(spec: RunSpec) -> str | None:
    """Write the resolved spec to ``<workdir>/<run>/spec.yaml`` unless it exists; returns the URI
    written, None if it already existed. Raises StorageError."""
    uri = RunPaths.for_run(spec.storage.workdir, spec.name).spec
    cfg = storage_config(spec)
    if storage.exists(uri, cfg):
        return None
    storage.write_bytes(uri, dump_spec(spec).encode(), cfg)
    return uri


class Outcome(StrEnum):
    """How a controller's work on a run ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"  # the run ConfigMap was deleted
    REFUSED = "Refused"  # the API refused a call the controller needs (RBAC, credentials, validation)

    @property
    def exit_code(self) -> int:
        """Process exit code of ``dynamics controller``."""
        return EXIT_FAILED if self in (Outcome.FAILED, Outcome.REFUSED) else EXIT_SUCCEEDED



class Rejected(Exception):
    """The API server refused to create one of a stage's objects (400/403/422): retrying cannot help."""

    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class StepResult:
    """One pass: the outcome if the run ended, and whether anything changed (resets the backoff)."""

    outcome: Outcome | None
    changed: bool


@dataclass(frozen=True)
class Poll:
    """Wait between passes: ``min_s`` after a change, doubling up to ``max_s`` while idle."""

    min_s: float = 2.0
    max_s: float = 30.0
    factor: float = 2.0

    def next(self, current: float, changed: bool) -> float:
        """The next wait."""
        return self.min_s if changed else min(self.max_s, max(current, self.min_s) * self.factor)


class Controller:
    """The controller of one run in one namespace."""

    def __init__(self, kube: Kube, run: str, *, poll: Poll | None = None, stop: threading.Event | None = None) -> None:
        self.kube = kube
        self.run = run
        self.poll = poll or Poll()
        self.stop = stop or threading.Event()
        self.instance = socket.gethostname()  # the controller pod's name, in Events' reportingInstance
        self._last: RunStatus | None = None
        self._spec_checked = False
        self._events_forbidden = False
        self._pending_events: list[Obj] = []  # Events the API did not take yet: retried every pass
        self._unauthorized = 0  # consecutive passes answered 401
        self._owner: str | None = None  # claimant of shared stages (see runs.shared_stage)

    def step(self) -> StepResult:
        """One pass: observe, decide, act."""
        record = read_run(self.kube, self.run)
        if record is None:
            log.info("run %s: ConfigMap deleted (run cancelled); stopping", self.run)
            return StepResult(Outcome.CANCELLED, True)
        if self._last is None:
            self._last = record.recorded
        if not self._spec_checked:
            self._spec_checked = True
            self._write_spec(record)
        self._flush_events()
        if self._owner is None:
            self._owner = claims.new_owner(claimant_label(record))
        actions = next_actions(record.spec, observe(self.kube, record, claimant=self._owner))
        changed = False
        for action in actions:
            try:
                changed = self._apply(record, action) or changed
            except Rejected as err:
                status = next(a.status for a in actions if isinstance(a, WriteStatus))
                self._apply(record, WriteStatus(rejected(status, err.stage, err.reason)))
                log.error("run %s: %s", self.run, err.reason)
                return StepResult(Outcome.FAILED, True)
            if isinstance(action, Finish):
                ok = action.phase is Phase.SUCCEEDED
                return StepResult(Outcome.SUCCEEDED if ok else Outcome.FAILED, changed)
        return StepResult(None, changed)

    def _apply(self, record: RunRecord, action: Action) -> bool:
        if isinstance(action, CreateObject):
            return self._create(record, action)
        if isinstance(action, Release):
            gone = not self.kube.delete(BY_KIND[action.kind], action.name, Propagation.BACKGROUND)
            log.info("run %s: stage %s: %s %s to release its resources", self.run, action.stage.value,
                     "already gone:" if gone else "deleted", action.ref)
            return True
        if isinstance(action, WriteStatus):
            for line in describe_changes(self._last, action.status):
                log.info("run %s: %s", self.run, line)
            for event in run_events(self._last, action.status):
                self._emit(record, event)
            self._last = action.status
            return write_status(self.kube, record, action.status)
        log.info("run %s finished: %s%s", self.run, action.phase.value, f" ({action.reason})" if action.reason else "")
        return False

    def _create(self, record: RunRecord, action: CreateObject) -> bool:
        obj = with_owner(action.obj, record.config_map)
        try:
            self.kube.create(obj)
        except KubeApiError as err:
            if err.status in FATAL_STATUSES:
                first = err.message.splitlines()[-1].strip().removeprefix("server said: ")
                raise Rejected(action.stage, f"the API server refused {object_ref(obj)}: {first}") from err
            if err.status != 409:
                raise
            # Not ours (observe() keeps only objects this ConfigMap owns): an earlier submission's
            # object that is still being deleted. Wait for it; adopting it would record its result.
            log.warning("run %s: %s still exists from an earlier submission; waiting until it is deleted",
                        self.run, object_ref(obj))
            return False
        log.info("run %s: stage %s: created %s", self.run, action.stage.value, object_ref(obj))
        return True

    def _emit(self, record: RunRecord, event: RunEvent) -> None:
        """Queue an Event on the run ConfigMap and send what is queued (see :meth:`_flush_events`)."""
        if self._events_forbidden:
            return
        now = dt.datetime.now(dt.UTC)
        obj = event_object(record.config_map, event, namespace=self.kube.namespace, now=now, instance=self.instance)
        self._pending_events.append(obj)
        self._flush_events()

    def _flush_events(self) -> bool:
        """Send queued Events in order; True when none is left. One that fails stays queued and is
        retried on the next pass (so with the loop's backoff); no permission: one warning, then none."""
        while self._pending_events and not self._events_forbidden:
            obj = self._pending_events[0]
            try:
                self.kube.create(obj)
            except KubeApiError as err:
                first_line = err.message.splitlines()[0]
                if err.status == 403:
                    self._events_forbidden = True
                    log.warning("run %s: %s; continuing without recording Events", self.run, first_line)
                elif err.status != 409:  # 409: a retry of an Event that did reach the server
                    log.warning("run %s: could not record Event %s (will retry): %s", self.run, obj["reason"],
                                first_line)
                    return False
            except KubeError as err:
                log.warning("run %s: could not record Event %s (will retry): %s", self.run, obj["reason"],
                            err.message.splitlines()[0])
                return False
            self._pending_events.pop(0)
        return True

    def _write_spec(self, record: RunRecord) -> None:
        """Write the resolved spec to the work directory once (not for a run that already ended)."""
        if record.recorded is not None and record.recorded.phase.terminal:
            return
        if cluster_storage_problems(record.spec):  # the run fails: nothing to write into a pod's disk
            return
        try:
            uri = write_resolved_spec(record.spec)
        except StorageError as err:
            fix = f" (fix: {err.hint})" if err.hint else ""
            log.warning("run %s: could not write the resolved spec: %s%s; continuing", self.run, err.message, fix)
            return
        if uri is not None:
            log.info("run %s: wrote the resolved spec to %s", self.run, uri)

    def loop(self) -> int:
        """Run until the run ends (exit code 0: succeeded or cancelled, 2: failed) or ``stop`` is set."""
        log.info(
            "controller for run %s in namespace %s (%s)", self.run, self.kube.namespace, self.kube.endpoint.describe()
        )
        wait = self.poll.min_s
        while not self.stop.is_set():
            outcome, changed = self._guarded_step()
            if outcome is not None:
                return self._finish(outcome, wait)
            wait = self.poll.next(wait, changed)
            self.stop.wait(wait)
        return EXIT_SUCCEEDED

    def _finish(self, outcome: Outcome, wait: float) -> int:
        """The run ended: send the Events still queued (RunSucceeded, RunFailed) with the loop's
        backoff, a few more times; then the exit code."""
        if outcome in (Outcome.SUCCEEDED, Outcome.FAILED):
            for _ in range(MAX_FINAL_EVENT_TRIES):
                if self._flush_events() or self.stop.is_set():
                    break
                wait = self.poll.next(wait, False)
                self.stop.wait(wait)
        return outcome.exit_code

    def _guarded_step(self) -> tuple[Outcome | None, bool]:
        """One pass; API rejections end the run (exit 2) and are recorded in its status when the API
        still lets us; 401 (a rotating token), unreachable servers and 5xx are retried."""
        try:
            result = self.step()
        except KubeApiError as err:
            if err.status == UNAUTHORIZED and self._unauthorized + 1 < MAX_UNAUTHORIZED_PASSES:
                self._unauthorized += 1
                log.warning("run %s: %s (retrying: service account tokens rotate)", self.run, err.message)
                return None, False
            if err.status in (*FATAL_STATUSES, UNAUTHORIZED):
                fix = f" (fix: {err.hint})" if err.hint else ""
                log.error("run %s: %s%s", self.run, err.message, fix)
                self._record_refusal(f"{err.message.splitlines()[0]}{fix}")
                return Outcome.REFUSED, False
            log.warning("run %s: %s (retrying)", self.run, err.message)
            return None, False
        except (KubeError, StorageError) as err:  # unreachable server or storage: it usually comes back
            log.warning("run %s: %s (retrying)", self.run, err.message)
            return None, False
        self._unauthorized = 0
        return result.outcome, result.changed

    def _record_refusal(self, reason: str) -> None:
        """Record a run the API refused to let the controller drive as Failed, best effort (the
        refused call may be the status patch itself)."""
        try:
            record = read_run(self.kube, self.run)
            if record is None or (record.recorded is not None and record.recorded.phase.terminal):
                return
            status = refused_status(record.recorded, f"the controller cannot continue: {reason}")
            for event in run_events(record.recorded, status):
                self._emit(record, event)
            write_status(self.kube, record, status)
        except KubeError as err:
            log.error("run %s: could not record the failure in the run's status: %s", self.run,
                      err.message.splitlines()[0])
