"""The Helm chart's ``values.schema.json``, generated from the run spec and the chart's own settings.

One source of truth: the ``run:`` part of the chart's values is the pydantic
:class:`~dynamics.spec.model.RunSpec` schema; the chart's own settings (service account, RBAC, S3, images,
defaults) are the pydantic models below. ``python -m dynamics.spec.schema --update`` rewrites
``charts/dynamics/values.schema.json``; without ``--update`` it only checks that the file is current.

:func:`helm_values_yaml` is what ``dynamics-submit spec.yaml --helm-values`` prints: Helm cannot
fill pydantic defaults, so a run release gets the fully resolved spec (:func:`helm_values`), written
so that Helm's YAML 1.2 reader gets back the same types.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from dynamics import constants as C
from dynamics.render.jobs import CONTROLLER_RESOURCES
from dynamics.spec.kube import NetworkPolicy
from dynamics.spec.loader import json_schema, resolved_dict
from dynamics.spec.model import DNS_LABEL, MAX_NAME, Cluster, Embed, Model, Resources, RunSpec, Toleration, Train

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "dynamics"
SCHEMA_PATH = CHART_DIR / "values.schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
RUN_DEF = "DynamicsRun"
# Helm reads every number in a values file as float64: integers above 2**53 would silently change.
MAX_SAFE_INTEGER = 2**53 - 1
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ROLE_ARN = r"^(arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+)?$"
# Plain scalars that YAML 1.2 (Helm) reads as numbers but PyYAML (YAML 1.1) writes unquoted, e.g. "1e-07".
YAML12_NUMBER = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class ServiceAccountValues(Model):
    """The ServiceAccount every pod of a run uses."""

    create: bool | None = Field(
        None, description="Create the ServiceAccount. null: yes for a namespace install, no for a run "
        "release (`run:` set), which uses the one the namespace install created.")
    name: str = Field("dynamics", pattern=DNS_SUBDOMAIN, max_length=253,
                      description="The controller's, bound to the Role; run specs refer to it as "
                      "kubernetes.serviceAccount.")
    workload_name: str = Field("dynamics-workload", pattern=DNS_SUBDOMAIN, max_length=253,
                               description="The stage pods' (no RBAC, no API token); run specs refer to it as "
                               "kubernetes.workloadServiceAccount.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations.")


class RbacValues(Model):
    """The namespaced Role and RoleBinding for the controller and dynamics-submit."""

    create: bool | None = Field(None, description="Create the Role and RoleBinding. null: as serviceAccount.")


class S3Values(Model):
    """How pods reach S3. Never secret values: only the name of an existing Secret, or a role."""

    endpoint: str = Field("", description="S3 endpoint override (MinIO, Ceph, R2); empty: AWS.")
    region: str = Field("", description="S3 region, e.g. us-east-1.")
    credentials_secret: str = Field(
        "", pattern=r"^([a-z0-9.-]+)?$",
        description="Name of an existing Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    role_arn: str = Field("", pattern=ROLE_ARN,
                          description="IAM role for IRSA: the service account's eks.amazonaws.com/role-arn.")


class ImageValues(Model):
    """One stage image."""

    repository: str = Field(min_length=1, description="Image repository.")
    tag: str = Field(min_length=1, description="Image tag.")


def _image(stage: str) -> ImageValues:
    return ImageValues(repository=f"{C.DEFAULT_IMAGE_REGISTRY}/dynamics-{stage}", tag=C.DEFAULT_IMAGE_TAG)


class ImagesValues(Model):
    """Default images per stage (same defaults as the run spec's `images:`)."""

    pull_policy: PullPolicy = Field("IfNotPresent", description="imagePullPolicy of every container.")
    embedder: ImageValues = _image("embedder")
    clusterer: ImageValues = _image("clusterer")
    trainer: ImageValues = _image("trainer")
    controller: ImageValues = _image("controller")


class ResourcesValues(Model):
    """Default CPU/memory per stage (same defaults as the run spec)."""

    embed: Resources = Embed().resources
    cluster: Resources = Cluster().resources
    train: Resources = Train.model_fields["resources"].default


class TestValues(Model):
    """The `helm test` Pod that runs `dynamics doctor`."""

    enabled: bool = Field(True, description="Render the helm test Pod.")
    resources: Resources = CONTROLLER_RESOURCES


class ChartValues(Model):
    """The chart's own settings (everything in values.yaml except `run:`)."""

    service_account: ServiceAccountValues = ServiceAccountValues()
    rbac: RbacValues = RbacValues()
    s3: S3Values = S3Values()
    images: ImagesValues = ImagesValues()
    image_pull_secrets: list[str] = Field(default_factory=list, description="Existing image pull Secrets.")
    resources: ResourcesValues = ResourcesValues()
    node_selector: dict[str, str] = Field(default_factory=dict, description="Default nodeSelector.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Default tolerations.")
    check_prerequisites: bool = Field(
        True, description="Fail when a run needs the PyTorchJob CRD and the cluster lacks it.")
    test: TestValues = TestValues()
    network_policy: NetworkPolicy = Field(
        NetworkPolicy(), description="The namespace's default kubernetes.networkPolicy for runs submitted here.")
    run: dict[str, Any] | None = Field(None, description="A run spec: when set, this release is a run.")


def _walk(node: Any, fn: Callable[[dict[str, Any]], None]) -> None:
    """Call ``fn`` on every dict inside a JSON schema."""
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, list):
        for value in node:
            _walk(value, fn)


def _cap_integers(node: dict[str, Any]) -> None:
    if node.get("type") == "integer" and "maximum" not in node and "exclusiveMaximum" not in node:
        node["maximum"] = MAX_SAFE_INTEGER


def _merge_defs(into: dict[str, Any], defs: dict[str, Any]) -> None:
    for name, definition in defs.items():
        if name in into and into[name] != definition:
            raise ValueError(f"schema definition '{name}' differs between the run spec and the chart")
        into[name] = definition


def run_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run spec's schema without its $defs, its $defs), with chart-side tightening."""
    schema = json_schema()
    defs = schema.pop("$defs")
    schema.pop("$schema", None)
    # Checked by a pydantic validator, not the schema: make Helm reject bad names before rendering.
    schema["properties"]["name"] |= {"pattern": DNS_LABEL.pattern, "maxLength": MAX_NAME}
    return schema, defs


def values_schema() -> dict[str, Any]:
    """The complete values.schema.json: the chart's settings plus `run:` as a DynamicsRun."""
    chart = ChartValues.model_json_schema(by_alias=True, mode="validation")
    run, run_defs = run_schema()
    defs: dict[str, Any] = {}
    _merge_defs(defs, chart.pop("$defs", {}))
    _merge_defs(defs, run_defs)
    defs[RUN_DEF] = run
    chart["properties"]["run"] = {
        "description": ChartValues.model_fields["run"].description,
        "type": ["object", "null"],
        # if/then (not anyOf) so that Helm names the failing field instead of "anyOf failed".
        "if": {"type": "object"},
        "then": {"$ref": f"#/$defs/{RUN_DEF}"},
    }
    out = {"$schema": JSON_SCHEMA_DIALECT, **chart, "title": "dynamics chart values", "$defs": defs}
    _walk(out, _cap_integers)
    return out


def schema_text() -> str:
    """values.schema.json as written to the chart."""
    return json.dumps(values_schema(), indent=2) + "\n"


def helm_values(spec: RunSpec) -> dict[str, Any]:
    """Values that make a release of the chart be this run (every default resolved)."""
    return {"run": resolved_dict(spec)}


class _HelmDumper(yaml.SafeDumper):
    """PyYAML quotes what YAML 1.1 would misread; also quote what Helm's YAML 1.2 reader would."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if YAML12_NUMBER.fullmatch(value) else ("|" if "\n" in value else None)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_HelmDumper.add_representer(str, _str)


def dump_values(values: dict[str, Any]) -> str:
    """Helm values as YAML that Helm reads back with the same types (strings stay strings)."""
    return yaml.dump(values, Dumper=_HelmDumper, sort_keys=False, default_flow_style=False)


def helm_values_yaml(spec: RunSpec) -> str:
    """What `dynamics-submit spec.yaml --helm-values` prints: `helm install R charts/dynamics -f` it."""
    return dump_values(helm_values(spec))


def main(argv: list[str] | None = None) -> int:
    """Check (default) or rewrite (--update) charts/dynamics/values.schema.json."""
    parser = argparse.ArgumentParser(prog="python -m dynamics.spec.schema", description=__doc__.split("\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite values.schema.json")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.update:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}")
        return 0
    if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text(encoding="utf-8") != text:
        print(f"stale: {SCHEMA_PATH} (run: python -m dynamics.spec.schema --update)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
