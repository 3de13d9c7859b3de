"""A stage pod refuses a spec edited after its stage was created (stage pods mount the run ConfigMap live)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.render import render_stage
from dynamics.spec.loader import load_spec
from dynamics.stages.common import context_from_args, stage_parser

ROOT = Path(__file__).resolve().parents[2]


def _pinned(spec_path: Path, stage: Stage) -> str:
    [job] = [o for o in render_stage(load_spec(spec_path), stage) if o["kind"] == "Job"]
    [ctr] = job["spec"]["template"]["spec"]["containers"]
    return next(e["value"] for e in ctr["env"] if e["name"] == C.ENV_STAGE_FINGERPRINT)


def test_stage_pod_refuses_a_spec_edited_after_its_stage_was_created(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(C.ENV_STAGE_FINGERPRINT, _pinned(path, Stage.SCALE))
    args = stage_parser("scale", "test").parse_args(["--spec", str(path)])
    assert context_from_args(args).spec.sample.alpha == data["sample"]["alpha"]  # the spec it was made for
    data["train"]["logEvery"] = 7  # not an input of scale: still the same stage
    path.write_text(yaml.safe_dump(data))
    context_from_args(args)
    data["sample"]["alpha"] = 0.5  # `kubectl edit` mid-run
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DynamicsError, match="spec changed after the scale stage was created"):
        context_from_args(args)
