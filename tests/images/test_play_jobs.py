"""images/play_jobs.py: a rendered Job's pod as `podman run` arguments (the smoke test of built images)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from dynamics.render import render
from dynamics.spec.loader import load_spec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "images"))
from play_jobs import main, run_argv, write_configmaps  # noqa: E402  (images/play_jobs.py)

OBJECTS = render(load_spec(ROOT / "examples" / "quickstart.yaml"))
JOBS = {obj["metadata"]["name"]: obj for obj in OBJECTS if obj["kind"] == "Job"}
CONFIGMAPS = {obj["metadata"]["name"]: obj for obj in OBJECTS if obj["kind"] == "ConfigMap"}


def _env(argv: list[str]) -> dict[str, str]:
    return dict(flag.removeprefix("--env=").split("=", 1) for flag in argv if flag.startswith("--env="))


def test_an_indexed_job_runs_as_its_pod_with_its_index(tmp_path: Path) -> None:
    job = JOBS["quickstart-embed"]
    argv = run_argv(job, 1, write_configmaps(job, CONFIGMAPS, tmp_path))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert argv[argv.index(f"--entrypoint={container['command'][0]}") + 1:] == [container["image"],
                                                                                 *container["command"][1:]]
    assert "--user=1000:1000" in argv and "--cap-drop=ALL" in argv and "--security-opt=no-new-privileges" in argv
    env = _env(argv)
    assert env["JOB_COMPLETION_INDEX"] == "1" and env["DYNAMICS_SPEC"] == "/etc/dynamics/spec.yaml"
    assert env["DYNAMICS_NAMESPACE"] == "default"  # a fieldRef, resolved
    assert f"--volume={tmp_path / 'spec'}:/etc/dynamics:ro" in argv
    assert yaml.safe_load((tmp_path / "spec" / "spec.yaml").read_text())["name"] == "quickstart"
    assert "--tmpfs=/tmp:rw,mode=1777" in argv


def test_torchrun_gets_its_node_rank_and_master_address(tmp_path: Path) -> None:
    job = JOBS["quickstart-train"]
    argv = run_argv(job, 0, write_configmaps(job, CONFIGMAPS, tmp_path))
    assert "--node-rank=0" in argv and not any("$(" in word for word in argv)
    assert "--add-host=quickstart-train-0.quickstart-train:127.0.0.1" in argv
    assert "--shm-size=1g" in argv and argv[argv.index("--entrypoint=torchrun") + 1].endswith("dynamics-trainer:0.1.0")


def test_a_plain_job_has_no_index(tmp_path: Path) -> None:
    job = JOBS["quickstart-scale"]
    assert "JOB_COMPLETION_INDEX" not in _env(run_argv(job, 0, write_configmaps(job, CONFIGMAPS, tmp_path)))


def test_it_stops_at_the_first_failing_container_and_hides_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "engine"
    engine.write_text('#!/bin/sh\necho "$@" >> "$0.log"\ncase "$*" in *cluster-fit*) exit 3;; esac\n')
    engine.chmod(0o755)
    rendered = tmp_path / "run.yaml"
    rendered.write_text(yaml.safe_dump_all(OBJECTS))
    monkeypatch.setenv("CONTAINER_ENGINE", str(engine))
    assert main([str(rendered), "embed", "cluster-fit", "scale", "--", "-e", "AWS_SECRET_ACCESS_KEY=s3cr3t"]) == 3
    runs = (tmp_path / "engine.log").read_text().splitlines()
    assert len(runs) == 5 and all(run.startswith("run -e AWS_SECRET_ACCESS_KEY=s3cr3t") for run in runs)
    assert [run.rsplit(" ", 1)[1] for run in runs] == ["embed"] * 4 + ["cluster-fit"]
    out = capsys.readouterr()
    assert "s3cr3t" not in out.out + out.err and "failed with exit code 3" in out.err
