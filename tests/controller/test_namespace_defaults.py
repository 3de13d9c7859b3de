"""Namespace defaults: the chart's namespace install records them; dynamics-submit fills unset fields."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from kubedouble.harness import NS, RUN, SPEC, Harness

from dynamics import constants as C
from dynamics.cli import app as cli
from dynamics.controller.resources import CONFIG_MAPS, JOBS
from dynamics.spec.loader import merge_defaults

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"

pytestmark = pytest.mark.usefixtures("work_bucket")


def test_merge_defaults_spec_wins() -> None:
    defaults = {"storage": {"region": "eu-west-1", "credentialsSecret": "s3"}, "images": {"trainer": "t:1"},
                "kubernetes": {"tolerations": [{"key": "gpu"}], "nodeSelector": {"pool": "gpu"}}}
    spec = {"storage": {"workdir": "s3://b/w", "region": "us-east-1"}, "kubernetes": {"tolerations": []}}
    merged, taken = merge_defaults(defaults, spec)
    assert merged["storage"] == {"workdir": "s3://b/w", "region": "us-east-1", "credentialsSecret": "s3"}
    assert merged["kubernetes"] == {"tolerations": [], "nodeSelector": {"pool": "gpu"}}
    assert merged["images"] == {"trainer": "t:1"}
    assert sorted(taken) == ["images", "kubernetes.nodeSelector", "storage.credentialsSecret"]
    assert spec == {"storage": {"workdir": "s3://b/w", "region": "us-east-1"}, "kubernetes": {"tolerations": []}}


@pytest.mark.skipif(not HELM.exists(), reason="helm not fetched: run scripts/setup.sh")
def test_chart_defaults_reach_the_submitted_run(h: Harness, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rendered = subprocess.run(
        [str(HELM), "template", "dynamics", str(ROOT / "charts" / "dynamics"), "-n", NS,
         "--set", "s3.credentialsSecret=team-s3", "--set", "s3.region=eu-west-1",
         "--set", "images.trainer.tag=9.9.9", "--show-only", "templates/defaults-configmap.yaml"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    defaults_cm = yaml.safe_load(rendered)
    assert defaults_cm["metadata"]["name"] == C.DEFAULTS_CONFIG_MAP and C.DEFAULTS_KEY in defaults_cm["data"]
    h.kube().create(defaults_cm)

    spec = copy.deepcopy(SPEC)
    spec["storage"].pop("credentialsSecret", None)
    spec["storage"]["region"] = "us-east-2"  # set by the user: kept
    spec.pop("images", None)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    # --helm-values with --namespace-defaults writes what a submission would create.
    assert cli.submit_main([str(path), "--helm-values", "--namespace-defaults"]) == 0
    values = capsys.readouterr()
    assert yaml.safe_load(values.out)["run"]["storage"]["credentialsSecret"] == "team-s3"
    assert "storage.credentialsSecret" in values.err
    assert cli.submit_main([str(path), "--offline"]) == 0
    out = capsys.readouterr().out
    assert f"namespace defaults ({C.DEFAULTS_CONFIG_MAP}) applied to:" in out and "storage.credentialsSecret" in out

    kube = h.kube()
    submitted = yaml.safe_load(kube.get(CONFIG_MAPS, RUN)["data"][C.CONFIG_SPEC_KEY])
    assert submitted["storage"]["credentialsSecret"] == "team-s3"
    assert submitted["storage"]["region"] == "us-east-2"
    assert submitted["images"]["trainer"].endswith(":9.9.9")
    job = kube.get(JOBS, f"{RUN}-controller")
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs and set(refs) == {"team-s3"}
