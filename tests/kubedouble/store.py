"""In-memory object store of the Kubernetes API test double.

Keeps what kube-apiserver and its garbage collector would: a global ``resourceVersion`` counter,
``uid``/``creationTimestamp``/``generation``, optimistic concurrency on writes, ``status`` subresource
semantics, a watch history, owner-reference cascade (optionally delayed, like background GC) and pod
logs; namespaced objects need an existing Namespace. Simplifications: no admission, defaulting or
schema validation beyond what is written below; strategic merge patches merge like JSON merge patches.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import apierrors
from .admission import Admission
from .patch import PatchType, apply_patch
from .resources import EVENTS, GROUP_BATCH, NAMESPACES, ResourceType

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name


class EventType(StrEnum):
    """Watch event types."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


class Propagation(StrEnum):
    """``DeleteOptions.propagationPolicy``."""

    ORPHAN = "Orphan"
    BACKGROUND = "Background"
    FOREGROUND = "Foreground"


@dataclass(frozen=True)
class WatchEvent:
    """One change, as a watch stream reports it."""

    rv: int
    type: EventType
    group: str
    plural: str
    namespace: str
    obj: Obj
    previous: Obj | None = None


def now_rfc3339() -> str:
    """The current time as Kubernetes formats timestamps."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(rt: ResourceType, namespace: str | None, name: str) -> Key:
    return (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)


def _meta(obj: Obj) -> Obj:
    return obj.setdefault("metadata", {})


class Store:
    """Thread-safe object store; every public method takes the one lock."""

    def __init__(self, *, gc_delay: float = 0.0, admission: Admission | None = None) -> None:
        self.gc_delay = gc_delay
        self.admission = admission or Admission()
        self.closed = False
        self.cond = threading.Condition(threading.RLock())
        self._objects: dict[Key, tuple[ResourceType, Obj]] = {}
        self._rv = 0
        self._history: list[WatchEvent] = []
        self._logs: dict[tuple[str, str, str], str] = {}
        self._ips = itertools.count(10)
        self._timers: list[threading.Timer] = []

    # --- bookkeeping ---
    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        with self.cond:
            return self._rv

    def _record(self, rt: ResourceType, kind: EventType, obj: Obj, previous: Obj | None = None) -> None:
        self._rv += 1
        _meta(obj)["resourceVersion"] = str(self._rv)
        ns = obj["metadata"].get("namespace", "")
        self._history.append(WatchEvent(self._rv, kind, rt.group, rt.plural, ns, copy.deepcopy(obj), previous))
        self.cond.notify_all()

    def close(self) -> None:
        """Wake every waiting watch so that the server can stop."""
        with self.cond:
            self.closed = True
            for timer in self._timers:
                timer.cancel()
            self.cond.notify_all()

    # --- reads ---
    def ensure_namespace(self, name: str) -> None:
        """Create namespace ``name`` unless it exists (what ``kubectl create namespace`` would do)."""
        with self.cond:
            if _key(NAMESPACES, None, name) not in self._objects:
                self.create(NAMESPACES, None, {"metadata": {"name": name}})

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        """A copy of one object, or 404."""
        with self.cond:
            found = self._objects.get(_key(rt, namespace, name))
            if found is None:
                raise apierrors.not_found(rt, name)
            return copy.deepcopy(found[1])

    def list(self, rt: ResourceType, namespace: str | None, predicate: Predicate) -> tuple[list[Obj], int]:
        """Matching objects (all namespaces when ``namespace`` is None) and the list resourceVersion."""
        with self.cond:
            items = [
                copy.deepcopy(obj)
                for (group, plural, ns, _), (_, obj) in sorted(self._objects.items())
                if (group, plural) == (rt.group, rt.plural)
                and (namespace is None or ns == namespace)
                and predicate(obj)
            ]
            return items, self._rv

    def find_by_uid(self, uid: str) -> Obj | None:
        """The live object with this uid, if any."""
        with self.cond:
            for _, obj in self._objects.values():
                if obj["metadata"].get("uid") == uid:
                    return copy.deepcopy(obj)
            return None

    # --- writes ---
    def create(self, rt: ResourceType, namespace: str | None, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Store a new object (409 if the name is taken); returns what was stored."""
        obj = copy.deepcopy(obj)
        meta = _meta(obj)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise apierrors.invalid(rt, "", "metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if rt.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise apierrors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        with self.cond:
            if rt.namespaced and _key(NAMESPACES, None, namespace or "") not in self._objects:
                raise apierrors.not_found(NAMESPACES, namespace or "")
            key = _key(rt, namespace, meta["name"])
            if key in self._objects:
                raise apierrors.already_exists(rt, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            for field in ("resourceVersion", "deletionTimestamp", "managedFields"):
                meta.pop(field, None)
            if rt.tracks_generation:
                meta["generation"] = 1
            if rt is EVENTS:
                _validate_event(obj)
            self._default_on_create(rt, obj)
            self.admission.validate(rt, obj)
            if rt.namespaced:
                self.admission.pod_security(rt, obj, self._objects[_key(NAMESPACES, None, namespace or "")][1])
            if dry_run:
                return obj
            self._objects[key] = (rt, obj)
            self._record(rt, EventType.ADDED, obj)
            if meta.get("ownerReferences"):
                self._schedule_gc([key])
            return copy.deepcopy(obj)

    def _default_on_create(self, rt: ResourceType, obj: Obj) -> None:
        """The bits of create-time defaulting that clients can observe."""
        if rt.has_status:
            obj.pop("status", None)
        if rt.plural == "pods":
            obj["status"] = {"phase": "Pending"}
        elif rt is NAMESPACES:
            obj["status"] = {"phase": "Active"}
        elif rt.plural == "services":
            spec = obj.setdefault("spec", {})
            if spec.get("clusterIP") != "None":
                spec["clusterIP"] = str(ipaddress.IPv4Address("10.96.0.0") + next(self._ips))
            obj["status"] = {"loadBalancer": {}}
        elif (rt.group, rt.plural) == (GROUP_BATCH, "jobs"):
            self._default_job(obj)

    @staticmethod
    def _default_job(obj: Obj) -> None:
        meta, spec = obj["metadata"], obj.setdefault("spec", {})
        name, uid = meta["name"], meta["uid"]
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        labels = template_meta.setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("backoffLimit", 6)
        if not meta.get("labels"):
            meta["labels"] = dict(labels)

    def replace(self, rt: ResourceType, namespace: str | None, name: str, new: Obj, *, status: bool = False) -> Obj:
        """PUT semantics: optimistic concurrency, ``status`` subresource split, generation bump."""
        with self.cond:
            key = _key(rt, namespace, name)
            found = self._objects.get(key)
            if found is None:
                raise apierrors.not_found(rt, name)
            old = found[1]
            new = copy.deepcopy(new)
            meta = _meta(new)
            if meta.get("name", name) != name:
                raise apierrors.bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise apierrors.conflict(rt, name)
            merged = self._merge_update(rt, old, new, status=status)
            if not status:
                self.admission.on_update(rt, old, merged)
            if merged == old:
                return copy.deepcopy(old)
            previous = copy.deepcopy(old)
            self._objects[key] = (rt, merged)
            self._record(rt, EventType.MODIFIED, merged, previous)
            if merged["metadata"].get("ownerReferences") != previous["metadata"].get("ownerReferences"):
                self._schedule_gc([key])
            if merged["metadata"].get("deletionTimestamp") and not merged["metadata"].get("finalizers"):
                self.delete(rt, namespace, name)  # the last finalizer is gone: now it is deleted
            return copy.deepcopy(merged)

    @staticmethod
    def _merge_update(rt: ResourceType, old: Obj, new: Obj, *, status: bool) -> Obj:
        if status:
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status", {})
            return merged
        merged = new
        merged["apiVersion"], merged["kind"] = rt.api_version, rt.kind
        meta = merged["metadata"]
        kept = ("uid", "creationTimestamp", "namespace", "resourceVersion", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds")
        for field in kept:
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        if rt.has_status:
            merged.pop("status", None)
            if "status" in old:
                merged["status"] = copy.deepcopy(old["status"])
        if rt.tracks_generation:
            unchanged = {k: v for k, v in old.items() if k not in ("metadata", "status")}
            if unchanged != {k: v for k, v in merged.items() if k not in ("metadata", "status")}:
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        return merged

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        patch_type: PatchType,
        *,
        status: bool = False,
    ) -> Obj:
        """PATCH semantics: apply to the current object, then update like PUT."""
        with self.cond:
            current = self.get(rt, namespace, name)
            patched = apply_patch(current, body, patch_type)
            patched_rv = patched.get("metadata", {}).get("resourceVersion")
            if patched_rv == current["metadata"].get("resourceVersion"):
                # Only a resourceVersion the patch itself sets is a precondition.
                patched["metadata"].pop("resourceVersion", None)
            return self.replace(rt, namespace, name, patched, status=status)

    def delete(self, rt: ResourceType, namespace: str | None, name: str, propagation: Propagation | None = None) -> Obj:
        """Remove an object; dependents are orphaned or garbage-collected per ``propagation``."""
        if propagation is None:
            # batch/v1 Jobs default to orphaning their pods when deleted through the API.
            is_job = (rt.group, rt.plural) == (GROUP_BATCH, "jobs")
            propagation = Propagation.ORPHAN if is_job else Propagation.BACKGROUND
        with self.cond:
            key = _key(rt, namespace, name)
            if key in self._objects and self._objects[key][1]["metadata"].get("finalizers"):
                return self._mark_deleted(key)
            found = self._objects.pop(key, None)
            if found is None:
                raise apierrors.not_found(rt, name)
            obj = found[1]
            previous = copy.deepcopy(obj)
            self._record(rt, EventType.DELETED, obj, previous)
            if rt.plural == "pods":
                self._logs = {k: v for k, v in self._logs.items() if k[:2] != (namespace, name)}
            if rt is NAMESPACES:
                # the namespace controller's part: everything inside goes with it
                for key in [k for k in self._objects if k[2] == name]:
                    inner_rt = self._objects[key][0]
                    self.delete(inner_rt, name, key[3], Propagation.BACKGROUND)
            uid = obj["metadata"]["uid"]
            dependents = [k for k, (_, o) in self._objects.items() if uid in _owner_uids(o)]
            if propagation is Propagation.ORPHAN:
                for dep in dependents:
                    self._drop_owner(dep, {uid})
            else:
                self._schedule_gc(dependents)
            return copy.deepcopy(obj)

    def _mark_deleted(self, key: Key) -> Obj:
        """Deletion of an object with finalizers: it stays, with ``deletionTimestamp``, until an update
        removes its last finalizer (then it is deleted)."""
        rt, obj = self._objects[key]
        if not obj["metadata"].get("deletionTimestamp"):
            previous = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            self._record(rt, EventType.MODIFIED, obj, previous)
        return copy.deepcopy(obj)

    # --- garbage collection ---
    def _schedule_gc(self, keys: list[Key]) -> None:
        if not keys:
            return
        if self.gc_delay <= 0:
            self._collect(keys)
            return
        timer = threading.Timer(self.gc_delay, self._collect, args=(keys,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _collect(self, keys: list[Key]) -> None:
        """Delete objects all of whose owners are gone; forget owners that are gone."""
        with self.cond:
            if self.closed:
                return
            live = {o["metadata"]["uid"] for _, o in self._objects.values()}
            for key in keys:
                found = self._objects.get(key)
                if found is None:
                    continue
                owners = _owner_uids(found[1])
                missing = owners - live
                if not missing:
                    continue
                rt = found[0]
                if missing == owners:
                    self.delete(rt, key[2] or None, key[3], Propagation.BACKGROUND)
                else:
                    self._drop_owner(key, missing)

    def _drop_owner(self, key: Key, uids: set[str]) -> None:
        rt, obj = self._objects[key]
        previous = copy.deepcopy(obj)
        refs = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("uid") not in uids]
        if refs:
            obj["metadata"]["ownerReferences"] = refs
        else:
            obj["metadata"].pop("ownerReferences", None)
        self._record(rt, EventType.MODIFIED, obj, previous)

    # --- watch ---
    def events_after(self, rv: int, rt: ResourceType, namespace: str | None) -> list[WatchEvent]:
        """Changes to ``rt`` (in ``namespace``, or everywhere) with resourceVersion > ``rv``."""
        with self.cond:
            return [
                ev
                for ev in self._history
                if ev.rv > rv
                and (ev.group, ev.plural) == (rt.group, rt.plural)
                and (namespace is None or ev.namespace == namespace)
            ]

    def wait_for_change(self, rv: int, timeout: float) -> None:
        """Block until something newer than ``rv`` happens, the store closes, or ``timeout`` passes."""
        with self.cond:
            self.cond.wait_for(lambda: self._rv > rv or self.closed, timeout=timeout)

    # --- pod logs ---
    def set_log(self, namespace: str, pod: str, container: str, text: str, *, append: bool = False) -> None:
        """Set (or append to) the log text of one container."""
        with self.cond:
            key = (namespace, pod, container)
            self._logs[key] = (self._logs.get(key, "") if append else "") + text
            self.cond.notify_all()

    def log(self, namespace: str, pod: str, container: str) -> str:
        """The log text of one container so far."""
        with self.cond:
            return self._logs.get((namespace, pod, container), "")


def _validate_event(event: Obj) -> None:
    """kube-apiserver's check of a core/v1 Event without ``eventTime``: the object it is about lives
    in the Event's namespace (an empty involvedObject namespace only in ``default``)."""
    meta = event["metadata"]
    involved_ns = (event.get("involvedObject") or {}).get("namespace") or ""
    expected = "" if meta.get("namespace") == "default" and not involved_ns else meta.get("namespace")
    if not event.get("eventTime") and involved_ns != expected:
        raise apierrors.invalid(
            EVENTS,
            meta["name"],
            f'involvedObject.namespace: Invalid value: "{involved_ns}": does not match event.namespace',
        )


def _owner_uids(obj: Obj) -> set[str]:
    return {r["uid"] for r in obj.get("metadata", {}).get("ownerReferences", []) if r.get("uid")}
