"""Issue 20 item 13: `dynamics doctor` finds a default-deny namespace and names the policies a run lacks."""

from __future__ import annotations

import pytest
from kubedouble.harness import NS, Harness, make_spec

from dynamics.controller.doctor import Verdict, check_network_policy, default_denied, network_policy_check
from dynamics.render import render_submission

DENY_ALL = {"metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
DENY_INGRESS = {"metadata": {"name": "deny-in"}, "spec": {"podSelector": {}}}  # policyTypes unset: Ingress
ALLOW_WEB = {"metadata": {"name": "web"},
             "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}
ALLOW_ALL_EGRESS = {"metadata": {"name": "open"},
                    "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}


def test_default_deny_is_an_empty_selector_without_rules() -> None:
    assert default_denied([DENY_ALL]) == {"Egress": ["default-deny"], "Ingress": ["default-deny"]}
    assert default_denied([DENY_INGRESS]) == {"Ingress": ["deny-in"]}
    assert default_denied([ALLOW_WEB, ALLOW_ALL_EGRESS]) == {}


def test_doctor_names_the_missing_policies() -> None:
    spec = make_spec()
    assert spec.train.nodes > 1
    check = network_policy_check([DENY_ALL], spec, NS)
    assert check.verdict is Verdict.FAIL
    for name in (f"{spec.name}-egress", f"{spec.name}-trainers", f"{spec.name}-api"):
        assert name in check.detail
    assert "Egress by default-deny" in check.detail and "Ingress by default-deny" in check.detail
    assert check.fix and "kubernetes.networkPolicy.enabled: true" in check.fix
    check = network_policy_check([DENY_INGRESS], spec, NS)  # only ingress denied: trainers need theirs
    assert check.verdict is Verdict.FAIL and f"{spec.name}-trainers" in check.detail
    assert f"{spec.name}-egress" not in check.detail
    assert network_policy_check([], spec, NS).verdict is Verdict.PASS
    assert network_policy_check([DENY_ALL], None, NS).verdict is Verdict.WARN
    enabled = make_spec(kubernetes={"networkPolicy": {"enabled": True}})
    assert network_policy_check([DENY_ALL], enabled, NS).verdict is Verdict.PASS


@pytest.mark.parametrize("enabled", [False, True])
def test_doctor_reads_the_namespace_policies(h: Harness, enabled: bool) -> None:
    """On the API double: the namespace's policies are listed; the run's own (once submitted) add nothing
    that looks like a default deny."""
    from kubedouble.resources import NETWORKING as DOUBLE_NETWORKING

    spec = make_spec(kubernetes={"networkPolicy": {"enabled": enabled}})
    kube = h.kube()
    assert check_network_policy(kube, spec).verdict is Verdict.PASS
    h.double.store.create(DOUBLE_NETWORKING[0], NS, {**DENY_ALL, "metadata": {"name": "default-deny"}})
    for obj in render_submission(spec)[1:-1]:
        kube.create(obj)
    check = check_network_policy(kube, spec)
    assert check.verdict is (Verdict.PASS if enabled else Verdict.FAIL), check.detail
