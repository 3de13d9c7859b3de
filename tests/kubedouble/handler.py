"""Request handling of the Kubernetes API test double: routing, auth, verbs, watch and log streams."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import apierrors
from .patch import PatchType
from .policy import Access
from .resources import SELF_SUBJECT_ACCESS_REVIEW, ResourceType, api_group, group_list, resource_list
from .selectors import SelectorError, object_filter, parse_field_selector, parse_label_selector
from .store import Obj, Propagation, Store
from .streams import StreamsMixin
from .tables import to_table, wants_table

if TYPE_CHECKING:
    from .server import KubeDouble

VERSION_INFO = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.2-kubedouble",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
NOT_FOUND_MESSAGE = "the server could not find the requested resource"


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def authz_resource(self) -> str:
        """``pods`` or ``pods/log``: the resource string RBAC rules name."""
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


def _verb(method: str, target: Target, query: dict[str, str]) -> str:
    if method == "GET":
        if target.name:
            return "get"
        return "watch" if query.get("watch") in ("1", "true") else "list"
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]


class Handler(StreamsMixin, BaseHTTPRequestHandler):
    """One connection; ``self.server.double`` is the :class:`KubeDouble`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "kubedouble/1.35"

    # --- plumbing ---
    @property
    def double(self) -> KubeDouble:
        """The double this handler serves."""
        return self.server.double  # type: ignore[attr-defined]

    @property
    def store(self) -> Store:
        """The double's object store."""
        return self.double.store

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``KubeDouble.accesses`` instead of an access log."""

    def _send_json(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if not content_type.endswith("json"):
            # kube-apiserver also speaks protobuf (typed kubectl commands send it); this double does not
            raise apierrors.unsupported_media_type(content_type, ["application/json"])
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise apierrors.bad_request(f"invalid JSON body: {err}") from err

    # --- entry points ---
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = self._read_body()
            self._authenticate()
            if method == "GET" and self._discovery(url.path):
                return
            target = self._parse_target(url.path)
            verb = _verb(method, target, query)
            self._authorize(verb, target)
            self._dispatch(method, verb, target, query, body)
        except apierrors.StatusError as err:
            self._send_json(err.code, err.to_status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _authenticate(self) -> None:
        token = self.double.policy.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            raise apierrors.unauthorized()

    def _authorize(self, verb: str, target: Target) -> None:
        if target.rt is SELF_SUBJECT_ACCESS_REVIEW:
            return  # every authenticated user may ask what it may do (system:basic-user)
        policy = self.double.policy
        if not policy.allows(verb, target.rt.group, target.authz_resource):
            raise apierrors.forbidden(
                policy.user, verb, target.rt.group, target.authz_resource, target.namespace, target.name
            )
        policy.accesses.append(Access(verb, target.rt.group, target.authz_resource, target.namespace))
        if policy.take_fault(verb, target.authz_resource):
            raise apierrors.unavailable()

    # --- discovery ---
    def _discovery(self, path: str) -> bool:
        registry = self.double.registry
        path = path.rstrip("/") or "/"
        if path == "/version":
            minor = self.double.kubernetes_version.split(".")[1]
            self._send_json(200, {**VERSION_INFO, "minor": minor, "gitVersion": f"v1.{minor}.2-kubedouble"})
        elif path in ("/healthz", "/readyz", "/livez"):
            self._send_text(200, "ok")
        elif path == "/api":
            server = f"127.0.0.1:{self.server.server_address[1]}"
            addrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": addrs})
        elif path == "/api/v1":
            core = [rt for rt in registry.types() if not rt.group]
            self._send_json(200, resource_list("v1", core))
        elif path == "/apis":
            self._send_json(200, group_list(registry))
        elif path.startswith("/apis/") and path.count("/") == 3 and path[len("/apis/") :] in registry.groups():
            gv = path[len("/apis/") :]
            self._send_json(200, resource_list(gv, registry.groups()[gv]))
        elif path.startswith("/apis/") and path.count("/") == 2:
            matches = [gv for gv in registry.groups() if gv.split("/")[0] == path.split("/")[2]]
            if not matches:
                raise apierrors.StatusError(404, apierrors.Reason.NOT_FOUND, NOT_FOUND_MESSAGE, {})
            self._send_json(200, api_group(matches[0]))
        else:
            return False
        return True

    def _parse_target(self, path: str) -> Target:
        parts = [p for p in path.split("/") if p]
        missing = apierrors.StatusError(404, apierrors.Reason.NOT_FOUND, NOT_FOUND_MESSAGE, {})
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise missing
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not 1 <= len(rest) <= 3:
            raise missing
        rt = self.double.registry.lookup(group, version, rest[0])
        if rt is None and (group, version, rest[0]) == (SELF_SUBJECT_ACCESS_REVIEW.group, "v1", rest[0]):
            rt = SELF_SUBJECT_ACCESS_REVIEW if rest[0] == SELF_SUBJECT_ACCESS_REVIEW.plural else None
        if rt is None or (namespace is not None and not rt.namespaced):
            raise missing
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise missing
        return Target(rt, namespace, name, sub)

    # --- verbs ---
    def _dispatch(self, method: str, verb: str, target: Target, query: dict[str, str], body: Any) -> None:
        rt, ns, name = target.rt, target.namespace, target.name
        if rt is SELF_SUBJECT_ACCESS_REVIEW:
            self._send_json(201, self._review(body or {}))
        elif verb == "get" and target.subresource == "log":
            self._pod_log(ns, name or "", query)
        elif verb == "get":
            self._send_object(200, self.store.get(rt, ns, name or ""), rt, query)
        elif verb == "list":
            self._list(target, query)
        elif verb == "watch":
            self._watch(target.rt, target.namespace, query, self._filter(query))
        elif verb == "create":
            if target.subresource or name:
                raise apierrors.method_not_allowed(method)
            self._require_object(body)
            dry_run = query.get("dryRun") == "All"
            self._send_json(201, self.store.create(rt, ns, body, dry_run=dry_run))
        elif verb == "update":
            self._require_object(body)
            self._send_json(200, self.store.replace(rt, ns, name or "", body, status=target.subresource == "status"))
        elif verb == "patch":
            self._send_json(200, self._patch(target, body))
        elif verb == "delete":
            self._delete(target, query, body)
        else:
            self._delete_collection(target, query, body)

    @staticmethod
    def _require_object(body: Any) -> None:
        if not isinstance(body, dict):
            raise apierrors.bad_request("the request body must be a JSON object")

    def _send_object(self, code: int, obj: Obj, rt: ResourceType, query: dict[str, str]) -> None:
        if wants_table(self.headers.get("Accept", "")):
            self._send_json(code, to_table([obj], obj["metadata"].get("resourceVersion", ""), query, rt.kind))
        else:
            self._send_json(code, obj)

    def _filter(self, query: dict[str, str]) -> Any:
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
        except SelectorError as err:
            raise apierrors.bad_request(str(err)) from err
        return object_filter(labels, fields)

    def _list(self, target: Target, query: dict[str, str]) -> None:
        items, rv = self.store.list(target.rt, target.namespace, self._filter(query))
        if wants_table(self.headers.get("Accept", "")):
            self._send_json(200, to_table(items, str(rv), query, target.rt.kind))
            return
        rt = target.rt
        self._send_json(
            200,
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def _patch(self, target: Target, body: Any) -> Obj:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = [PatchType.JSON, PatchType.MERGE] + ([] if target.rt.custom else [PatchType.STRATEGIC])
        if content_type not in accepted:
            raise apierrors.unsupported_media_type(content_type, [str(a) for a in accepted])
        return self.store.patch(
            target.rt,
            target.namespace,
            target.name or "",
            body,
            PatchType(content_type),
            status=target.subresource == "status",
        )

    @staticmethod
    def _propagation(query: dict[str, str], body: Any) -> Propagation | None:
        options = body if isinstance(body, dict) else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        if policy is None and (query.get("orphanDependents") or options.get("orphanDependents")) in (
            True,
            "true",
        ):
            return Propagation.ORPHAN
        try:
            return Propagation(policy) if policy else None
        except ValueError as err:
            raise apierrors.bad_request(f"invalid propagationPolicy {policy!r}") from err

    def _delete(self, target: Target, query: dict[str, str], body: Any) -> None:
        rt = target.rt
        obj = self.store.delete(rt, target.namespace, target.name or "", self._propagation(query, body))
        details: dict[str, Any] = {"name": target.name, "kind": rt.plural, "uid": obj["metadata"]["uid"]}
        if rt.group:
            details["group"] = rt.group
        self._send_json(
            200,
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
        )

    def _delete_collection(self, target: Target, query: dict[str, str], body: Any) -> None:
        items, _ = self.store.list(target.rt, target.namespace, self._filter(query))
        propagation = self._propagation(query, body)
        for item in items:
            meta = item["metadata"]
            try:
                self.store.delete(target.rt, meta.get("namespace"), meta["name"], propagation)
            except apierrors.StatusError as err:
                if err.code != 404:
                    raise
        rt = target.rt
        self._send_json(
            200,
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": items,
            },
        )

    # --- SelfSubjectAccessReview ---
    def _review(self, body: dict[str, Any]) -> dict[str, Any]:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource = f"{resource}/{attrs['subresource']}"
        allowed = self.double.policy.allows(attrs.get("verb", ""), attrs.get("group", ""), resource)
        review = dict(body)
        review.update({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview"})
        review.setdefault("metadata", {})
        review["status"] = {"allowed": allowed}
        if allowed:
            review["status"]["reason"] = "allowed by the kubedouble allow-list"
        return review
