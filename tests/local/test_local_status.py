"""``dynamics status``, ``list`` and ``paths`` of runs in a work directory: no cluster, no kube config."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
import yaml

from dynamics import constants as C
from dynamics.cli.app import main
from dynamics.constants import Stage
from dynamics.spec.fingerprint import fingerprints, run_paths
from dynamics.spec.loader import dump_spec, validate
from dynamics.storage import objects as storage

EXAMPLE = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home without ~/.kube/config, no $KUBECONFIG, not in a pod; the current directory is tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(tmp_path: Path, name: str = "quickstart"):
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(name=name)
    data["storage"]["workdir"] = str(tmp_path / "runs")
    spec = validate(data)
    paths = run_paths(spec)
    storage.write_bytes(paths.spec, dump_spec(spec).encode())
    return spec, paths


def test_status_reads_markers_and_fingerprints(no_cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, paths = _run(no_cluster)
    fps = fingerprints(spec)
    for part in range(4):  # 12 shards, 3 per part: embed complete for this spec
        storage.write_marker(paths.embed_marker(part), {C.MARKER_FINGERPRINT: fps[Stage.EMBED]})
    storage.write_marker(paths.cluster_marker, {C.MARKER_FINGERPRINT: "another-spec"})  # stale
    storage.write_marker(paths.assign_marker(0), {C.MARKER_FINGERPRINT: fps[Stage.ASSIGN]})  # 1 of 4
    assert main(["status", "quickstart"]) == 0  # found under ./runs/ without --workdir or a cluster
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line}
    assert lines["embed"][1:4] == ["complete", "4/4", fps[Stage.EMBED][:16]]
    assert lines["cluster-fit"][1:3] == ["stale", "1/1"]
    assert lines["assign"][1:3] == ["partial", "1/4"]
    assert lines["scale"][1:3] == ["pending", "0/1"]
    assert "run quickstart: not running; stale stages: rerun with --replace" in out
    assert main(["status", "quickstart", "--workdir", str(no_cluster / "runs")]) == 0
    assert "stale" in capsys.readouterr().out


def test_status_shows_the_local_runner_holding_the_lock(no_cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, paths = _run(no_cluster)
    lock = Path(paths.root) / "run.lock"
    with lock.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the runner does
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        assert main(["status", "quickstart"]) == 0
        assert f"running (local runner PID {os.getpid()})" in capsys.readouterr().out
    assert main(["status", "quickstart"]) == 0
    assert "not running" in capsys.readouterr().out


def test_list_finds_local_runs(no_cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(no_cluster, "first")
    _run(no_cluster, "second")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["first", "second"]
    assert "stopped (0/6 stages)" in out
    assert main(["list", "--workdir", str(no_cluster / "runs")]) == 0
    assert "first" in capsys.readouterr().out


def test_unknown_local_run_names_the_runs_there(no_cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(no_cluster, "first")
    assert main(["status", "frist"]) == 2
    err = capsys.readouterr().err
    assert "no run 'frist'" in err and "runs there: first" in err
    assert "dynamics list --workdir" in err  # a command that works without a cluster


def test_paths_prints_every_artifact_with_its_fingerprint(no_cluster: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec, paths = _run(no_cluster)
    fps = fingerprints(spec)
    assert main(["paths", "quickstart"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith("embed-<fp>")}
    assert rows["embed"][1:] == [fps[Stage.EMBED][:16], paths.embed_dir() + "/"]
    assert f"_shared/embed-{fps[Stage.EMBED][:16]}/" in rows["embed"][2]
    assert f"_shared/cluster-{fps[Stage.CLUSTER_FIT][:16]}/" in rows["cluster-fit"][2]
    assert rows["train"][1:] == [fps[Stage.TRAIN][:16], paths.checkpoints_dir() + "/"]
    assert rows["spec"][2] == paths.spec
    assert "eval" in rows
    assert main(["paths", str(EXAMPLE)]) == 0  # or from the spec file
    assert "runs/_shared/embed-" in capsys.readouterr().out


def test_a_stage_run_by_hand_records_the_spec(no_cluster: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from dynamics.cli.app import STAGES

    data = yaml.safe_load(EXAMPLE.read_text())
    data["storage"]["workdir"] = str(no_cluster / "runs")
    spec_file = no_cluster / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    spec = validate(data)
    recorded = Path(run_paths(spec).spec)
    assert main(["stage", "scale", "--spec", str(spec_file)]) != 0  # nothing assigned yet: fails,
    assert not recorded.exists()  # and a failed stage leaves nothing behind, not even the record
    monkeypatch.setattr(importlib.import_module(STAGES["scale"]), "main", lambda argv: 0)  # a stage that succeeds
    assert main(["stage", "scale", "--spec", str(spec_file)]) == 0
    assert yaml.safe_load(recorded.read_text()) == yaml.safe_load(dump_spec(spec))
    assert main(["status", "quickstart"]) == 0  # so the run is known
    data["sample"]["alpha"] = 0.5  # an existing record is what the artifacts were made for: kept
    spec_file.write_text(yaml.safe_dump(data))
    main(["stage", "scale", "--spec", str(spec_file)])
    assert yaml.safe_load(recorded.read_text()) == yaml.safe_load(dump_spec(spec))


def test_a_run_with_a_relative_work_dir_is_found_from_elsewhere(no_cluster: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())  # storage.workdir: runs (relative to where it was started)
    spec = validate(data)
    project = no_cluster / "project"
    record = project / "runs" / "quickstart" / "spec.yaml"
    record.parent.mkdir(parents=True)
    record.write_text(dump_spec(spec))
    fps = fingerprints(spec)
    marker = project / "runs" / "quickstart" / "sample" / "scale.done"
    storage.write_marker(str(marker), {C.MARKER_FINGERPRINT: fps[Stage.SCALE]})
    monkeypatch.chdir(project)
    assert main(["status", "quickstart"]) == 0
    assert "scale        complete" in capsys.readouterr().out
    monkeypatch.chdir(project / "runs")  # one level further down: ./quickstart/spec.yaml
    assert main(["status", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "scale        complete" in out and f"work dir: {project / 'runs' / 'quickstart'}" in out
