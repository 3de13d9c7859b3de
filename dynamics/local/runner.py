"""``dynamics-submit spec.yaml --local``: the rendered run, executed as local processes.

Each stage's objects come from the same :func:`dynamics.render.render_stage` the controller uses;
we run their containers' commands with their environment: an Indexed Job becomes one process per
index (``JOB_COMPLETION_INDEX`` set, a few at a time), the trainer is ``torchrun`` with the
variables the training operator would inject. Finished stages (all markers present, made for this
spec: their fingerprints match) are skipped, so re-running after an interruption continues where it
stopped; the trainer resumes from its latest checkpoint by itself. Rerunning a name with an edited
spec is refused, or with ``--replace`` redoes exactly the stale stages (:mod:`dynamics.stages.rerun`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from types import FrameType

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.local.lifecycle import ENV_RUN_ID, RunLock, bound_command, descendants
from dynamics.local.procs import Proc, StageRun
from dynamics.local.progress import Reporter, make_reporter
from dynamics.local.report import print_summary
from dynamics.local.shared import SharedStage
from dynamics.render import render_stage, stages_of
from dynamics.render.pod import Obj
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.loader import dump_spec
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.stages.embed.modelref import pin_run_model
from dynamics.stages.progress import stage_complete
from dynamics.stages.rerun import check_rerun
from dynamics.storage import claims
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

POLL_SECONDS = 0.2
RECORD_EVERY = 5  # polls between scans of the process tree (a /proc walk)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Test hook: stop after this stage (e.g. "assign": only the stages runs may share).
ENV_UNTIL = "DYNAMICS_LOCAL_UNTIL"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _container_env(ctr: Obj, spec: RunSpec, spec_path: Path) -> dict[str, str]:
    """The container's environment, made to work on this machine."""
    env = dict(os.environ)
    # Console scripts of this installation first (dynamics, torchrun).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for item in ctr.get("env", []):
        name = item["name"]
        if name in ("HOME", "HF_HOME"):
            continue  # keep the user's home and caches
        if "value" in item:
            env[name] = str(item["value"])
        elif "fieldRef" in item.get("valueFrom", {}):
            env[name] = spec.namespace
        # secretKeyRef: the credentials are already in this shell's environment (or ~/.aws).
    env[C.ENV_SPEC] = str(spec_path)
    return env


def _templates(obj: Obj) -> list[tuple[str, Obj, int]]:
    """(role, pod template, replicas) of a Job or PyTorchJob."""
    if obj["kind"] == "PyTorchJob":
        specs = obj["spec"]["pytorchReplicaSpecs"]
        return [(role, r["template"], r["replicas"]) for role, r in specs.items()]
    if obj["kind"] == "Job":
        return [("job", obj["spec"]["template"], obj["spec"].get("completions", 1))]
    return []


def _torch_env(obj: Obj, node_rank: int, nnodes: int, port: int) -> dict[str, str]:
    """What the training operator injects into PyTorchJob pods (torchrun reads PET_*)."""
    return {"PET_NNODES": str(nnodes), "PET_NPROC_PER_NODE": obj["spec"]["nprocPerNode"],
            "PET_NODE_RANK": str(node_rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _local_command(command: list[str], port: int, env: dict[str, str]) -> list[str]:
    # The indexed-job launcher's master is pod 0's DNS name; locally that is this machine. Kubernetes
    # expands $(JOB_COMPLETION_INDEX) in commands; so do we.
    local = {"--master-addr": "127.0.0.1", "--master-port": str(port)}
    out = []
    for arg in command:
        flag = arg.split("=", 1)[0]
        arg = f"{flag}={local[flag]}" if flag in local and "=" in arg else arg
        out.append(arg.replace(f"$({C.ENV_JOB_INDEX})", env.get(C.ENV_JOB_INDEX, "0")))
    return out


def stage_processes(spec: RunSpec, stage: Stage, spec_path: Path, log_dir: Path, run_id: str = "") -> list[Proc]:
    """The processes standing in for ``stage``'s pods; each carries ``run_id`` (see ``RunLock.run_id``)."""
    procs: list[Proc] = []
    for obj in render_stage(spec, stage):
        templates = _templates(obj)
        nnodes = sum(n for _, _, n in templates)
        port = _free_port()
        indexed = obj["kind"] == "Job" and obj["spec"].get("completionMode") == "Indexed"
        rank = 0
        for role, template, replicas in templates:
            ctr = template["spec"]["containers"][0]
            for i in range(replicas):
                env = _container_env(ctr, spec, spec_path)
                env[ENV_RUN_ID] = run_id
                if indexed:
                    env[C.ENV_JOB_INDEX] = str(i)
                if obj["kind"] == "PyTorchJob":
                    env.update(_torch_env(obj, rank, nnodes, port))
                label = f"{stage.value}-{i}" if indexed else (f"{stage.value}-{role.lower()}-{i}"
                                                               if obj["kind"] == "PyTorchJob" else stage.value)
                command = bound_command(_local_command(ctr["command"], port, env), sys.executable)
                procs.append(Proc(label, command, env, log_dir / f"{label}.log"))
                rank += 1
    return procs


def _parallelism(stage: Stage, procs: list[Proc], max_parallel: int) -> int:
    # Trainer processes rendezvous with each other: they must all run at once.
    return len(procs) if stage is Stage.TRAIN else max(1, min(max_parallel, len(procs)))


def _drive(run: StageRun, reporter: Reporter, lock: RunLock, shared: SharedStage | None = None) -> bool:
    pending = deque(run.procs)
    running: list[Proc] = []
    ticks = 0
    while pending or running:
        if shared is not None:
            try:
                shared.heartbeat()
            except claims.ClaimLost:
                for proc in running:
                    proc.stop()
                raise
        started = False
        while pending and len(running) < run.parallel:
            proc = pending.popleft()
            proc.start()
            running.append(proc)
            started = True
        if started or ticks % RECORD_EVERY == 0:
            # So that a rerun can stop whatever outlives this runner (see RunLock.stop_orphans).
            lock.record(descendants(os.getpid()))
        ticks += 1
        time.sleep(POLL_SECONDS)
        for proc in list(running):
            code = proc.poll()
            if code is None:
                continue
            running.remove(proc)
            if code != 0:
                run.failed = proc
                for other in running:
                    other.stop()
                return False
            run.done.append(proc)
            reporter.proc_done(run, proc)
        reporter.tick(run, running)
    return True


def _stages(spec: RunSpec) -> list[Stage]:
    """The run's stages, up to the one named by :data:`ENV_UNTIL` when set."""
    stages = list(stages_of(spec))
    until = os.environ.get(ENV_UNTIL)
    names = [s.value for s in stages]
    return stages[: names.index(until) + 1] if until in names else stages


def _install_signal_handlers(current: list[StageRun], lock: RunLock) -> None:
    """Ctrl-C, SIGTERM and a closed terminal end every process of the run, then the runner."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for run in current:
            for proc in run.procs:
                proc.stop()
        lock.release()
        raise SystemExit(128 + signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def _with_workdir(spec: RunSpec, workdir: str | None) -> RunSpec:
    if not workdir:
        return spec
    return spec.model_copy(update={"storage": spec.storage.model_copy(update={"workdir": workdir})})


def _state_dir(spec: RunSpec, root: str) -> Path:
    """Where the processes' spec copy, logs and the run lock go: the run's directory when the work dir is
    local (so another work dir never writes into the current directory), ``.dynamics/<run>`` for S3."""
    return (Path(root) if not storage.is_s3(root) else Path(".dynamics") / spec.name).resolve()


def _write_spec(spec: RunSpec, state: Path) -> Path:
    spec_path = state / C.RESOLVED_SPEC
    spec_path.write_text(dump_spec(spec), encoding="utf-8")
    return spec_path


def _lock(spec: RunSpec, state: Path) -> RunLock:
    """Take the run's lock (before touching its state) and stop what a killed runner left running."""
    state.mkdir(parents=True, exist_ok=True)
    lock = RunLock(state, spec.name)
    lock.acquire()
    stopped = lock.stop_orphans()
    if stopped:
        print(f"stopped {len(stopped)} process(es) left running by an earlier, killed runner of "
              f"'{spec.name}' (PIDs {', '.join(str(p.pid) for p in stopped)})", file=sys.stderr)
    return lock


def run_local(spec: RunSpec, workdir: str | None = None, max_parallel: int = 2, replace: bool = False) -> int:
    """Run every stage of ``spec`` here; 0 when the run completed, 1 when a stage failed.

    One runner per run: a second one on the same run refuses (:class:`RunLock`).
    """
    spec = _with_workdir(spec, workdir)
    # embed.model run:RUN -> run:RUN@<its train fingerprint>, so the embed fingerprint names the weights.
    spec = pin_run_model(spec, storage_config(spec))
    paths = run_paths(spec)
    state = _state_dir(spec, paths.root)
    lock = _lock(spec, state)
    try:
        return _run(spec, paths, state, lock, max_parallel, replace)
    finally:
        lock.release()


def _run(spec: RunSpec, paths: RunPaths, state: Path, lock: RunLock, max_parallel: int, replace: bool) -> int:
    cfg = storage_config(spec)
    reporter = make_reporter()
    # Before anything is written: an edited spec must not overwrite the record of what the artifacts are.
    check_rerun(spec, paths, cfg, stages_of(spec), replace, reporter.say)
    # Under the lock nothing else writes this run: temporaries are leftovers of a killed write.
    storage.remove_stale_temps(paths.root, cfg)
    spec_path = _write_spec(spec, state)
    if storage.is_s3(paths.root):
        storage.write_bytes(paths.spec, spec_path.read_bytes(), cfg)
    log_dir = spec_path.parent / "logs"
    reporter.say(f"run '{spec.name}': work dir {paths.root}, logs in {log_dir}/")
    current: list[StageRun] = []
    _install_signal_handlers(current, lock)
    timings: dict[Stage, float | None] = {}
    for stage in _stages(spec):
        if stage_complete(spec, paths, stage, cfg):
            reporter.say(f"- {stage.value}: already complete, skipped")
            timings[stage] = None
            continue
        shared = SharedStage.of(paths, stage, cfg, lock.run_id)
        if shared is not None and not shared.claim_or_wait(spec, paths, reporter.say):
            reporter.say(f"- {stage.value}: completed by another run, skipped")
            timings[stage] = None
            continue
        procs = stage_processes(spec, stage, spec_path, log_dir, lock.run_id)
        run = StageRun(stage, procs, _parallelism(stage, procs, max_parallel))
        current[:] = [run]
        reporter.stage_started(stage, len(procs))
        start = time.monotonic()
        try:
            ok = _drive(run, reporter, lock, shared)
        finally:
            if shared is not None:
                shared.release()
        reporter.stage_finished(stage, ok)
        if not ok:
            proc = run.failed
            assert proc is not None
            reporter.say(f"\nstage '{stage.value}' failed: {proc.label} exited with code {proc.poll()}.")
            cause = proc.cause()
            if cause:
                reporter.say(f"cause: {cause}")
            reporter.say(f"Last log lines ({proc.log_path}):")
            for line in proc.tail():
                reporter.say(f"    {line}")
            reporter.close()
            return 1
        timings[stage] = time.monotonic() - start
        reporter.say(f"  {stage.value} complete in {timings[stage]:.1f}s")
    reporter.close()
    print_summary(spec, paths, cfg, timings)
    return 0
