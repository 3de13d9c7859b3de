"""`--local` process lifecycle: one runner per run, no process outlives a killed runner, and a
killed run resumes to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from localrun import SUBMIT, local_env

from dynamics.demo import generate_demo_data
from dynamics.local.lifecycle import ProcId, RunLock, alive, proc_id

ROOT = Path(__file__).resolve().parents[2]
NAME = "lifecycle"
STEPS = 16  # of 16 samples (2 processes x 8): long enough to kill it mid-phase


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _recorded(state: Path) -> list[ProcId]:
    try:
        return [ProcId(p["pid"], p["start"]) for p in json.loads((state / "pids.json").read_text())]
    except (FileNotFoundError, ValueError):
        return []


def test_second_runner_refuses_and_ctrl_c_ends_every_child(tmp_path: Path) -> None:
    # The only shard is a FIFO nobody writes: the embed process blocks on it until it is stopped.
    (tmp_path / "data").mkdir()
    os.mkfifo(tmp_path / "data" / "00000.tar")
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data["data"] = {"shards": "data/{00000..00000}.tar", "approxSamples": 100}
    data["train"]["procsPerNode"] = 1
    data.pop("eval")  # its files are not here, and the run never gets that far
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    state = tmp_path / "runs" / "quickstart"  # a local work dir holds the run state
    first = subprocess.Popen([SUBMIT, "spec.yaml", "--local"], cwd=tmp_path, env=local_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: _recorded(state) or first.poll() is not None, 120, "the embed process never started")
        assert first.poll() is None
        children = _recorded(state)
        second = subprocess.run([SUBMIT, "spec.yaml", "--local"], cwd=tmp_path, env=local_env(), text=True,
                                capture_output=True, timeout=120)
        assert second.returncode != 0
        assert f"already being run here by another runner (PID {first.pid})" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in the runner's terminal
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 128 + signal.SIGINT
    assert children and not any(alive(p) for p in children)
    assert not (state / "pids.json").exists()
    lock = RunLock(state, "quickstart")
    lock.acquire()  # released: the next runner may go
    lock.release()


def test_rerun_stops_recorded_orphans_only(tmp_path: Path) -> None:
    orphan, stranger = _sleeper(), _sleeper()
    try:
        me, other = proc_id(orphan.pid), proc_id(stranger.pid)
        assert me is not None and other is not None
        dead = RunLock(tmp_path, "r")
        # The stranger's PID recorded with another start time: a reused PID, not ours to kill.
        dead.record([me, ProcId(other.pid, other.start + 1)])
        lock = RunLock(tmp_path, "r")
        lock.acquire()
        assert lock.stop_orphans() == [me]
        orphan.wait(timeout=10)
        assert not alive(me) and alive(other)
        assert not (tmp_path / "pids.json").exists()
        lock.release()
    finally:
        for p in (orphan, stranger):
            p.kill()
            p.wait()


# ------------------------------------------------------------------ killed mid-training


def _spec(root: Path) -> Path:
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data["name"] = NAME
    data["data"] = {"shards": str(root / "demo-data/train/{00000..00003}.tar"), "approxSamples": 400}
    data["embed"].update(shardsPerPart=4)  # one process per stage: each costs a Python + torch start
    data["cluster"].update(k=8, trainSamples=400, iterations=5)
    phase = dict(data["train"]["phases"][0], samples=STEPS * 16, batchPerGpu=8, warmup=2)
    data["train"].update(phases=[phase], checkpointEvery=4, logEvery=4)
    data.pop("eval")
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _submit(cwd: Path, spec: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SUBMIT, str(spec), "--local"], cwd=cwd, env=local_env(), text=True, capture_output=True,
                          timeout=600)


def _copy_without_training(src: Path, dst: Path) -> None:
    shutil.copytree(src / "runs", dst / "runs", ignore=shutil.ignore_patterns("train"))


def _ours(marker: str) -> list[int]:
    """Live processes whose environment names ``marker`` (the state dir: every process of a run)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if marker.encode() in environ and state != "Z":
            pids.append(int(entry.name))
    return pids


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(what)


def _final(run_root: Path) -> Path:
    return next((run_root / "train" / "checkpoints").glob(f"phase00-*-step{STEPS:09d}.pt"))


@pytest.mark.slow
def test_killed_run_leaves_no_process_and_resumes_to_the_same_weights(tmp_path: Path) -> None:
    generate_demo_data(str(tmp_path / "demo-data"), seed=0, n_concepts=8, n_train=400, n_eval_per_class=2,
                       shard_size=100, image_size=32)
    spec = _spec(tmp_path)
    ref, killed, again = tmp_path / "ref", tmp_path / "killed", tmp_path / "again"
    for d in (ref, killed, again):
        d.mkdir()
    first = _submit(ref, spec)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    _copy_without_training(ref, killed)
    _copy_without_training(ref, again)

    # Two CPU runs of one spec: byte-identical final checkpoints (rng_state included).
    second = _submit(again, spec)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _final(again / "runs" / NAME).read_bytes() == _final(ref / "runs" / NAME).read_bytes()

    state = str(killed / "runs" / NAME)
    runner = subprocess.Popen([SUBMIT, str(spec), "--local"], cwd=killed, env=local_env(), text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = killed / "runs" / NAME / "train" / "checkpoints"
    _wait_for(lambda: any(ckpts.glob("*.pt")) or runner.poll() is not None, 300, "no checkpoint appeared")
    assert runner.poll() is None, "the run ended before it could be killed"
    assert len(_ours(state)) >= 3  # runner, torchrun and its workers
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    _wait_for(lambda: not _ours(state), 10, f"processes outlived the killed runner: {_ours(state)}")
    assert not (killed / "runs" / NAME / "train" / "train.done").exists()
    stale = ckpts / f".phase00-res32-step{STEPS:09d}.pt.tmp-{'ab' * 16}"  # as a kill mid-write leaves it
    stale.write_bytes(b"half a checkpoint")

    resumed = _submit(killed, spec)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (killed / "runs" / NAME / "logs" / "train-0.log").read_text()
    assert "resuming from" in log
    assert not stale.exists()
    got = torch.load(_final(killed / "runs" / NAME), weights_only=True)["state_dict"]
    want = torch.load(_final(ref / "runs" / NAME), weights_only=True)["state_dict"]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
