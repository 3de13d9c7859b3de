"""Issue 21 item 1: no process of a `--local` run outlives a kill of the runner's process group, whenever
it comes during the trainer's start-up, and a rerun finds one even when its record was lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynamics.local.lifecycle import BIND_PREAMBLE, ENV_RUN_ID, RunLock, alive, bound_command, proc_id, run_processes

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
# The runner, reduced to what matters here: it starts torchrun as a Proc (parent-death signal, run
# identity, bound workers) and waits. The workers stand in for trainers still importing.
RUNNER = """
import sys, time
from pathlib import Path
from dynamics.local.lifecycle import ENV_RUN_ID, bound_command
from dynamics.local.procs import Proc
import os
run_id, port = sys.argv[1], sys.argv[2]
command = ["torchrun", "--nnodes=1", "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={port}",
           "--no-python", sys.executable, "-c", "import time; time.sleep(300)"]
env = {**os.environ, ENV_RUN_ID: run_id}
Proc("train", bound_command(command, sys.executable), env, Path(run_id) / "train.log").start()
time.sleep(300)
"""


def test_bound_command_wraps_torchruns_entry_only() -> None:
    cmd = ["torchrun", "--nproc-per-node=2", "--no-python", "dynamics", "stage", "train"]
    assert bound_command(cmd, "/py") == ["torchrun", "--nproc-per-node=2", "--no-python", "/py", "-S", "-c",
                                         BIND_PREAMBLE, "dynamics", "stage", "train"]
    assert bound_command(["dynamics", "stage", "embed"], "/py") == ["dynamics", "stage", "embed"]


def _workers(run_id: str) -> list[int]:
    """PIDs of the stand-in trainers (the torchrun workers) of ``run_id``."""
    out = []
    for p in run_processes(run_id):
        try:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"time.sleep(300)" in cmdline and b"torchrun" not in cmdline:
            out.append(p.pid)
    return out


@pytest.mark.slow
def test_group_kill_during_trainer_startup_leaves_nothing(tmp_path: Path) -> None:
    """SIGKILL the runner's group while torchrun starts, just after its workers appear (< 1 s), and once
    they run; 10 s later nothing of any of the three runs is alive."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    points = {"torchrun starting": None, "workers appeared": 0.0, "workers running": 2.0}
    runs = {}
    for i, label in enumerate(points):
        run_id = str(tmp_path / f"run{i}")
        Path(run_id).mkdir()
        runner = subprocess.Popen([sys.executable, "-c", RUNNER, run_id, str(29600 + i)], env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs[label] = (run_id, runner)
    killed_at = {}
    deadline = time.monotonic() + 120
    while len(killed_at) < len(points) and time.monotonic() < deadline:
        for label, delay in points.items():
            run_id, runner = runs[label]
            if label in killed_at:
                continue
            workers = _workers(run_id)
            if delay is None and run_processes(run_id):  # torchrun exists, its workers do not yet
                killed_at[label] = len(workers)
            elif delay is not None and workers:
                time.sleep(delay)
                killed_at[label] = len(_workers(run_id))
            if label in killed_at:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
        time.sleep(0.02)
    assert len(killed_at) == len(points), f"not every start-up point was reached: {killed_at}"
    assert killed_at["workers running"] == 2, killed_at
    time.sleep(10)
    left = {label: run_processes(run_id) for label, (run_id, _) in runs.items()}
    for procs in left.values():
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
    assert not any(left.values()), left


def test_rerun_stops_an_unrecorded_process_of_the_run(tmp_path: Path) -> None:
    """A process started after the runner's last record (or whose record was lost) is found by the run's
    identity in its environment; a process of another run is left alone."""
    lock = RunLock(tmp_path, "r")
    mine = subprocess.Popen(["sleep", "60"], env={**os.environ, ENV_RUN_ID: lock.run_id}, start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], env={**os.environ, ENV_RUN_ID: lock.run_id + "-other"},
                             start_new_session=True)
    try:
        me, stranger = proc_id(mine.pid), proc_id(other.pid)
        assert me is not None and stranger is not None
        _wait_exec(mine.pid)
        lock.acquire()
        assert not lock.pids_path.exists()  # nothing recorded
        assert lock.stop_orphans() == [me]
        mine.wait(timeout=10)
        assert not alive(me) and alive(stranger)
        lock.release()
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()


def _wait_exec(pid: int) -> None:
    """Until ``pid`` has exec'd ``sleep`` (its environment is readable from then on)."""
    deadline = time.monotonic() + 10
    while b"sleep" not in Path(f"/proc/{pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
