"""Thin Kubernetes API layer: connect (kubeconfig or in-cluster), create/get/list/patch/delete, logs.

Objects travel as plain dicts (what ``render()`` produces and what the API returns as JSON); the
``kubernetes`` client provides configuration, authentication and transport. Every failure becomes
a :class:`~dynamics.errors.KubeError` that names the call, the namespace and a fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from dynamics.controller.resources import (
    ACCESS_REVIEWS,
    BY_KIND,
    CONFIG_MAPS,
    EVENTS,
    JOBS,
    POD_LOGS,
    PODS,
    PYTORCHJOBS,
    RUN_RESOURCES,
    Propagation,
    Resource,
    Verb,
)
from dynamics.errors import KubeError

Obj = dict[str, Any]
Permission = tuple[str, str, str]  # (verb, API group, resource)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
CHART_INSTALL = "helm install dynamics charts/dynamics -n {ns}"


def _perm(verb: Verb, res: Resource) -> Permission:
    return (verb.value, res.group, res.rbac_resource)


# Exactly the calls the in-cluster controller makes (the chart's Role must grant them): the run
# ConfigMap, the stages' objects, a failed stage's pods and their log tails, and progress Events.
CONTROLLER_PERMISSIONS: tuple[Permission, ...] = (
    _perm(Verb.GET, CONFIG_MAPS),
    _perm(Verb.PATCH, CONFIG_MAPS),
    *(_perm(verb, res) for res in RUN_RESOURCES for verb in (Verb.LIST, Verb.CREATE)),
    # A failed run's running workloads are deleted (kubernetes.onFailure: stop).
    _perm(Verb.DELETE, JOBS),
    _perm(Verb.DELETE, PYTORCHJOBS),
    _perm(Verb.LIST, PODS),
    _perm(Verb.GET, POD_LOGS),
    _perm(Verb.CREATE, EVENTS),
    _perm(Verb.LIST, EVENTS),  # FailedCreate Warnings on a stuck stage's workload
)
# Exactly the calls `dynamics-submit` makes (with --replace and --wait).
SUBMIT_PERMISSIONS: tuple[Permission, ...] = (
    _perm(Verb.CREATE, CONFIG_MAPS),
    _perm(Verb.GET, CONFIG_MAPS),
    _perm(Verb.DELETE, CONFIG_MAPS),
    _perm(Verb.CREATE, JOBS),
    *(_perm(Verb.LIST, res) for res in RUN_RESOURCES),
)
REQUIRED_PERMISSIONS: tuple[Permission, ...] = tuple(dict.fromkeys(CONTROLLER_PERMISSIONS + SUBMIT_PERMISSIONS))
# What `dynamics status/list/logs/cancel` use on top (read-only views and cancel's delete).
CLI_PERMISSIONS: tuple[Permission, ...] = (
    _perm(Verb.LIST, CONFIG_MAPS),
    _perm(Verb.LIST, PODS),
    _perm(Verb.GET, POD_LOGS),
)


class KubeApiError(KubeError):
    """The API answered with an error status (``status`` is the HTTP code, ``reason`` the Status reason)."""

    def __init__(self, message: str, *, status: int, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """Which API server, through which kubeconfig context (None in-cluster), and the namespace."""

    server: str
    context: str | None
    namespace: str

    def describe(self) -> str:
        """``http://x:6443 (context 'kind')`` or ``https://... (in-cluster)``."""
        where = f"context '{self.context}'" if self.context else "in-cluster service account"
        return f"{self.server} ({where})"


def _status_of(err: ApiException) -> tuple[str, str]:
    """(reason, message) of an error response's Status body, tolerating non-JSON bodies."""
    try:
        body = json.loads(err.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict):
        return str(body.get("reason") or err.reason or ""), str(body.get("message") or "")
    return str(err.reason or ""), str(err.body or "").strip()[:200]


def _short_reason(err: urllib3.exceptions.HTTPError) -> str:
    text = str(getattr(err, "reason", None) or err)
    return text.rsplit(": ", 1)[-1] if "Errno" in text else text


class Kube:
    """API calls in one namespace. Build with :func:`connect` (or directly around an ApiClient)."""

    def __init__(self, api: client.ApiClient, endpoint: Endpoint) -> None:
        self.api = api
        self.endpoint = endpoint

    @property
    def namespace(self) -> str:
        """The namespace every namespaced call goes to."""
        return self.endpoint.namespace

    def in_namespace(self, namespace: str) -> Kube:
        """The same connection, working in another namespace."""
        return Kube(self.api, dataclasses.replace(self.endpoint, namespace=namespace))

    # --- transport and errors ---
    def _call(
        self,
        verb: Verb,
        res: Resource,
        name: str | None = None,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        stream: bool = False,
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        method = {Verb.GET: "GET", Verb.LIST: "GET", Verb.CREATE: "POST", Verb.PATCH: "PATCH", Verb.DELETE: "DELETE"}[
            verb
        ]
        request = self.api.param_serialize(
            method,
            res.path(self.namespace, name),
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        timeout = (CONNECT_TIMEOUT_S, None if stream else READ_TIMEOUT_S)
        try:
            response = self.api.call_api(*request, _request_timeout=timeout)
            if not 200 <= response.status <= 299:
                response.read()
                raise ApiException.from_response(http_resp=response, body=None, data=None)
        except ApiException as err:
            raise self._api_error(err, verb, res, name) from err
        except urllib3.exceptions.HTTPError as err:
            raise self.unreachable(err) from err
        if stream:
            return response.response
        data = response.read()
        if res.subresource == "log":
            return data.decode("utf-8", errors="replace")
        return json.loads(data) if data else None

    def _api_error(self, err: ApiException, verb: Verb, res: Resource, name: str | None) -> KubeApiError:
        reason, message = _status_of(err)
        status = int(err.status or 0)
        where = f' in namespace "{self.namespace}"' if res.namespaced else " (cluster scope)"
        if status == 403:
            return KubeApiError(
                f"permission denied: cannot {verb.value} {res.display}{where}\n  server said: {message}",
                status=status,
                reason=reason,
                hint=f"install the dynamics chart in this namespace, which creates the Role it needs: "
                f"`{CHART_INSTALL.format(ns=self.namespace)}`; or ask an admin to grant "
                f"'{verb.value}' on '{res.display}'",
            )
        if status == 401:
            return KubeApiError(
                f"the API server at {self.endpoint.describe()} rejected the credentials",
                status=status,
                reason=reason,
                hint="refresh your kubeconfig credentials (`kubectl get pods` should work)",
            )
        target = f"{res.display}/{name}" if name else res.display
        return KubeApiError(
            f"{verb.value} {target}{where} failed: {status} {reason}: {message}", status=status, reason=reason
        )

    def unreachable(self, err: urllib3.exceptions.HTTPError) -> KubeError:
        """The error for a server that cannot be reached (names the server and the context tried)."""
        ctx = f"--context {self.endpoint.context} " if self.endpoint.context else ""
        return KubeError(
            f"cannot reach the Kubernetes API server at {self.endpoint.describe()}: {_short_reason(err)}",
            hint=f"check that the cluster is up and `kubectl {ctx}get pods` works; choose another cluster "
            "with --context or the KUBECONFIG environment variable",
        )

    # --- objects ---
    def get(self, res: Resource, name: str) -> Obj | None:
        """One object, or None if it does not exist."""
        try:
            return self._call(Verb.GET, res, name)
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, res: Resource, selector: str | None = None, *, fields: str | None = None) -> list[Obj]:
        """Objects matching a label selector and a field selector (kind/apiVersion filled in on every item)."""
        query = {k: v for k, v in (("labelSelector", selector), ("fieldSelector", fields)) if v}
        data = self._call(Verb.LIST, res, query=query or None)
        items = data.get("items") or []
        for item in items:
            item.setdefault("kind", res.kind)
            item.setdefault("apiVersion", res.api_version)
        return items

    def create(self, obj: Obj) -> Obj:
        """Create ``obj`` in this namespace; 409 raises KubeApiError with status 409."""
        res = BY_KIND[obj["kind"]]
        return self._call(Verb.CREATE, res, body=obj)

    def patch(self, res: Resource, name: str, patch: Obj) -> Obj:
        """JSON merge patch."""
        return self._call(Verb.PATCH, res, name, body=patch, content_type=MERGE_PATCH)

    def delete(self, res: Resource, name: str, propagation: Propagation = Propagation.BACKGROUND) -> bool:
        """Delete one object (dependents by ``propagation``); False if it was already gone."""
        try:
            self._call(Verb.DELETE, res, name, body={"propagationPolicy": propagation.value})
        except KubeApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    # --- pods ---
    def log(self, pod: str, *, container: str | None = None, tail: int | None = None) -> str:
        """A container's log so far."""
        query = {k: v for k, v in (("container", container), ("tailLines", tail)) if v is not None}
        return self._call(Verb.GET, POD_LOGS, pod, query={k: str(v) for k, v in query.items()})

    def follow_log(self, pod: str, *, container: str | None = None) -> Iterator[str]:
        """A container's log lines as they are written, until the container ends."""
        query = {"follow": "true", **({"container": container} if container else {})}
        response = self._call(Verb.GET, POD_LOGS, pod, query=query, stream=True)
        pending = b""
        try:
            for chunk in response.stream(4096, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line.decode("utf-8", errors="replace") for line in lines)
        except urllib3.exceptions.HTTPError as err:
            raise self.unreachable(err) from err
        finally:
            response.release_conn()
        if pending:
            yield pending.decode("utf-8", errors="replace")

    # --- cluster facts ---
    def version(self) -> Obj:
        """``/version`` of the API server."""
        return self._raw_get("/version")

    def served(self, group_version: str) -> set[str] | None:
        """Resources served under ``group/version``, or None when the API group is not installed."""
        try:
            data = self._raw_get(f"/apis/{group_version}")
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise
        return {r["name"] for r in data.get("resources", [])}

    def can_i(self, verb: str, group: str, resource: str) -> bool:
        """SelfSubjectAccessReview: may the current user ``verb`` ``group/resource`` in this namespace?"""
        plural, _, sub = resource.partition("/")
        attrs = {"namespace": self.namespace, "verb": verb, "group": group, "resource": plural}
        if sub:
            attrs["subresource"] = sub
        review = {
            "apiVersion": ACCESS_REVIEWS.api_version,
            "kind": ACCESS_REVIEWS.kind,
            "spec": {"resourceAttributes": attrs},
        }
        answer = self._call(Verb.CREATE, ACCESS_REVIEWS, body=review)
        return bool((answer.get("status") or {}).get("allowed"))

    def _raw_get(self, path: str) -> Obj:
        request = self.api.param_serialize("GET", path, header_params={"Accept": JSON}, auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(*request, _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
            response.read()
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
        except ApiException as err:
            reason, message = _status_of(err)
            raise KubeApiError(
                f"GET {path} failed: {err.status} {message}", status=int(err.status or 0), reason=reason
            ) from err
        except urllib3.exceptions.HTTPError as err:
            raise self.unreachable(err) from err
        return json.loads(response.data)


def _namespace_in_cluster() -> str | None:
    try:
        return SA_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def connect(
    *,
    context: str | None = None,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    in_cluster: bool | None = None,
) -> Kube:
    """A :class:`Kube` for a kubeconfig context (default: current) or the in-cluster service account.

    In a pod (``KUBERNETES_SERVICE_HOST`` set) with no context or kubeconfig given, the service
    account is used. The namespace is ``namespace``, else the context's (or the pod's), else default.
    """
    cfg = client.Configuration()
    # The client reads $KUBECONFIG once at import; read it now so that the current value counts.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    if in_cluster is None:
        in_cluster = context is None and kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    # (an explicit --kubeconfig or $KUBECONFIG wins over the in-cluster service account)
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
            context_name, context_ns = None, _namespace_in_cluster()
        else:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next(c for c in contexts if c["name"] == (context or active["name"]))
            context_name, context_ns = chosen["name"], chosen.get("context", {}).get("namespace")
    except (ConfigException, StopIteration, OSError) as err:
        source = (
            "the in-cluster service account"
            if in_cluster
            else (f"context '{context}'" if context else "the current kubeconfig context")
        )
        raise KubeError(
            f"cannot load Kubernetes credentials from {source}: {err}",
            hint="set KUBECONFIG or pass --context NAME (`kubectl config get-contexts` lists them)",
        ) from err
    cfg.retries = 0  # callers retry where it makes sense (the controller loop); no urllib3 warnings
    endpoint = Endpoint(cfg.host, context_name, namespace or context_ns or "default")
    return Kube(client.ApiClient(cfg), endpoint)
