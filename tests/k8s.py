"""Validation of rendered objects against real schemas, shared by the render, chart and golden tests.

Built-in kinds: the official Kubernetes OpenAPI schemas via ``kubernetes-validate`` (strict: unknown
fields are errors). PyTorchJob: the real CRD's ``openAPIV3Schema`` read in place from
``../shared/crds`` (never copied into this repository), made strict the same way.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from dynamics import constants as C

SHARED = Path(__file__).resolve().parents[2] / "shared"
CRD_PATH = SHARED / "crds" / "kubeflow.org_pytorchjobs.yaml"
SCHEMAS = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"


def _schema_file(name: str) -> Any:
    return json.loads(SCHEMAS.joinpath(name).read_text(encoding="utf-8"))


@functools.cache
def _definitions(version: str) -> referencing.Resource:
    return referencing.Resource.from_contents(_schema_file(f"v{version}.0-local-strict/_definitions.json"))


@functools.cache
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """The strict validator kubernetes_validate.validate() builds, built once per (minor, kind): that
    function re-reads the multi-MB definitions on every call, too slow for a 7-minor matrix."""
    if not SCHEMAS.joinpath(f"v{version}.0-local-strict").is_dir():
        raise AssertionError(f"the pinned kubernetes-validate has no schemas for Kubernetes {version}")
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes_validate names its files
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = _schema_file(f"v{version}.0-local-strict/{kind.lower()}-{api}.json")
    registry = referencing.Registry().with_resources([("", referencing.Resource.from_contents(schema))])
    registry = _definitions(version) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_builtin(obj: dict[str, Any], version: str = C.KUBERNETES_VERSION) -> None:
    """Raise kubernetes_validate.ValidationError if ``obj`` violates the official schema of ``version``
    (strict: unknown fields are errors)."""
    try:
        _validator(version, obj["kind"], obj["apiVersion"]).validate(obj)
    except jsonschema.ValidationError as err:
        raise kubernetes_validate.ValidationError(err, version=version) from err


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def pytorchjob_schema() -> dict[str, Any]:
    """The PyTorchJob CRD's openAPIV3Schema (strict), or skip when ../shared is absent."""
    if not CRD_PATH.exists():
        pytest.skip(f"PyTorchJob CRD not found at {CRD_PATH} (../shared is absent in this checkout)")
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    # The CRD leaves metadata open ({type: object}); the API server validates it separately.
    return _strict(schema)


def validate_pytorchjob(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if ``obj`` violates the PyTorchJob CRD schema."""
    jsonschema.validate(obj, pytorchjob_schema(), cls=jsonschema.Draft7Validator)


def validate_any(obj: dict[str, Any], version: str = C.KUBERNETES_VERSION) -> None:
    """Validate a rendered object with the schema matching its kind (built-ins: of Kubernetes ``version``)."""
    if obj["kind"] == "PyTorchJob":
        validate_pytorchjob(obj)
    else:
        validate_builtin(obj, version)


def pod_templates(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every pod template (or pod) inside a rendered object."""
    kind = obj["kind"]
    if kind == "Pod":
        yield obj
    elif kind == "Job":
        yield obj["spec"]["template"]
    elif kind == "PyTorchJob":
        for replica in obj["spec"]["pytorchReplicaSpecs"].values():
            yield replica["template"]


def assert_restricted(template: dict[str, Any]) -> None:
    """Assert the 'restricted' Pod Security Standard fields on a pod template."""
    spec = template["spec"]
    pod_sc = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field), field
    assert all("hostPath" not in v for v in spec.get("volumes", []))
    for ctr in spec.get("initContainers", []) + spec["containers"]:
        sc = ctr.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, ctr["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], ctr["name"]
        assert not sc.get("privileged"), ctr["name"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, ctr["name"]
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, ctr["name"]
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), ctr["name"]
        assert not ctr.get("ports") or all("hostPort" not in p for p in ctr["ports"])
