"""The namespace's defaults: what the Helm chart's namespace install records for runs to inherit.

``helm install dynamics charts/dynamics --set s3.credentialsSecret=...`` writes a partial run spec to
the ``dynamics-defaults`` ConfigMap; ``dynamics-submit`` fills whatever the user's spec leaves unset
from it (the spec always wins), and says which fields it took.
"""

from __future__ import annotations

from typing import Any

import yaml

from dynamics import constants as C
from dynamics.controller.kube import Kube
from dynamics.controller.resources import CONFIG_MAPS
from dynamics.errors import KubeError


def namespace_defaults(kube: Kube) -> dict[str, Any]:
    """The defaults recorded in the namespace, or {} when the chart has not been installed there."""
    config_map = kube.get(CONFIG_MAPS, C.DEFAULTS_CONFIG_MAP)
    if config_map is None:
        return {}
    try:
        data = yaml.safe_load(config_map.get("data", {}).get(C.DEFAULTS_KEY, "") or "{}")
    except yaml.YAMLError as exc:
        raise KubeError(f"ConfigMap {C.DEFAULTS_CONFIG_MAP} in namespace {kube.namespace} is not valid YAML",
                        hint="re-run `helm upgrade` of the dynamics chart in this namespace") from exc
    if not isinstance(data, dict):
        raise KubeError(f"ConfigMap {C.DEFAULTS_CONFIG_MAP} in namespace {kube.namespace} holds no mapping",
                        hint="re-run `helm upgrade` of the dynamics chart in this namespace")
    return data
