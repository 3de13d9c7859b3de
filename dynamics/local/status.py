"""``dynamics status``, ``list`` and ``paths`` for runs in a work directory, without a cluster.

A run is found by its recorded ``<workdir>/<run>/spec.yaml`` (``dynamics-submit --local``, the
controller and every ``dynamics stage`` write it). Its state is read from the completion markers and
their fingerprints, exactly as ``--local`` decides what to skip; whether a local runner is working
on it, from the run's lock file (``run.lock``, held with ``flock`` by the runner while it lives).

Where no work directory is given, the runs are looked for in the current directory: a local work
directory here or one level down (``./runs/quickstart/spec.yaml``), and the ``.dynamics/<run>/``
state of runs whose work dir is on S3 (its spec names the work dir).
"""

from __future__ import annotations

import errno
import fcntl
from dataclasses import dataclass
from pathlib import Path

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.fingerprint import SHORT, fingerprints, run_paths
from dynamics.spec.loader import load_spec_text
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.stages.progress import stage_markers, stage_progress
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths, join

STATE_DIR = ".dynamics"  # the local runner's state of a run whose work dir is on S3 (see local/runner.py)


@dataclass(frozen=True)
class StageState:
    """One stage of a run as its markers show it."""

    stage: Stage
    state: str  # complete | stale | partial | pending
    done: int
    total: int
    fingerprint: str


def runs_in(workdir: str) -> dict[str, str]:
    """Run name -> recorded spec URI of every run under ``workdir`` (a local path or ``s3://``)."""
    if storage.is_s3(workdir):
        found = [u for u in storage.list_uris(workdir) if u.endswith(f"/{C.RESOLVED_SPEC}")]
        prefix = workdir.rstrip("/") + "/"
        specs = [u for u in found if u[len(prefix):].count("/") == 1]
    else:
        specs = [str(p) for p in sorted(Path(workdir).glob(f"*/{C.RESOLVED_SPEC}"))]
    return {s.rsplit("/", 2)[-2]: s for s in specs if s.rsplit("/", 2)[-2] != C.DIR_SHARED}


def local_runs(here: Path) -> dict[str, str]:
    """Runs found from ``here`` without a work dir: ``here`` and its subdirectories as local work dirs,
    and ``.dynamics/<run>/spec.yaml`` (S3 work dirs). Pure file-system reads."""
    found: dict[str, str] = {}
    candidates = [here, *sorted(p for p in here.iterdir() if p.is_dir() and p.name != STATE_DIR)]
    for workdir in candidates:
        for name, spec in runs_in(str(workdir)).items():
            found.setdefault(name, spec)
    for spec in sorted((here / STATE_DIR).glob(f"*/{C.RESOLVED_SPEC}")):
        found.setdefault(spec.parent.name, str(spec))
    return found


def read_run(spec_uri: str) -> RunSpec:
    """The spec a run recorded, its work dir taken from where the record is (``<workdir>/<run>/spec.yaml``):
    a relative work dir in the record means the directory it was started from, which need not be this one.
    A local runner's state of an S3 run (``.dynamics/<run>/``) keeps the recorded work dir."""
    spec = load_spec_text(storage.read_bytes(spec_uri).decode("utf-8"), spec_uri)
    workdir = spec_uri.rsplit("/", 2)[0]
    if storage.is_s3(spec.storage.workdir) and not storage.is_s3(spec_uri):
        return spec
    return _with_workdir(spec, workdir)


def _with_workdir(spec: RunSpec, workdir: str) -> RunSpec:
    if workdir == spec.storage.workdir:
        return spec
    return spec.model_copy(update={"storage": spec.storage.model_copy(update={"workdir": workdir})})


def find_run(run: str, workdir: str | None, here: Path) -> RunSpec:
    """The recorded spec of run ``run`` in ``workdir`` (or found from ``here``); a clear error if none."""
    runs = runs_in(workdir) if workdir else local_runs(here)
    if run not in runs:
        where = workdir or f"{here} (its subdirectories and {STATE_DIR}/)"
        known = f"; runs there: {', '.join(sorted(runs))}" if runs else ""
        raise DynamicsError(f"no run '{run}' under {where}{known}",
                            hint="`dynamics list --workdir DIR` lists a work dir's runs; a run appears once "
                            "`dynamics-submit SPEC --local` or a stage has started it", exit_code=2)
    spec = read_run(runs[run])
    return _with_workdir(spec, workdir) if workdir else spec  # the work dir may have moved since


def stage_states(spec: RunSpec, paths: RunPaths) -> list[StageState]:
    """Every stage's state: complete (all markers, this spec's fingerprint), stale (markers of another
    spec), partial (some markers) or pending (none)."""
    cfg = storage_config(spec)
    fps = fingerprints(spec)
    out = []
    for stage in C.PIPELINE:
        if stage is Stage.EVAL and spec.eval is None:
            continue
        progress = stage_progress(spec, paths, stage, cfg)
        state = "pending" if progress.done == 0 else "partial" if not progress.complete else "complete"
        if progress.complete:
            marks = [storage.read_marker(m, cfg) or {} for m in stage_markers(spec, paths, stage)]
            if any(m.get(C.MARKER_FINGERPRINT) != fps[stage] for m in marks):
                state = "stale"
        out.append(StageState(stage, state, progress.done, progress.total, fps[stage]))
    return out


def runner_pid(state_dir: Path) -> int | None:
    """PID of the local runner holding the run's lock, or None when none does (flock, as the runner)."""
    lock = state_dir / "run.lock"
    if not lock.is_file():
        return None
    with lock.open("r", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def state_dir(spec: RunSpec, here: Path) -> Path:
    """Where a local runner keeps the run's lock and logs: the run's directory for a local work dir,
    ``.dynamics/<run>`` (relative to where it was started) for S3."""
    root = run_paths(spec).root
    return (here / STATE_DIR / spec.name) if storage.is_s3(root) else Path(root)


def status_lines(spec: RunSpec, here: Path) -> list[str]:
    """``dynamics status RUN`` for a run in a work dir: its runner, then one line per stage."""
    paths = run_paths(spec)
    states = stage_states(spec, paths)
    state = state_dir(spec, here)
    pid = runner_pid(state)
    if pid is not None:
        overall = f"running (local runner PID {pid})" if pid > 0 else "running (a local runner holds its lock)"
    elif all(s.state == "complete" for s in states):
        overall = "complete"
    else:
        overall = "not running" + ("; stale stages: rerun with --replace" if any(
            s.state == "stale" for s in states) else "; `dynamics-submit SPEC --local` resumes it")
    lines = [f"run {spec.name}: {overall}", f"work dir: {paths.root}",
             f"{'STAGE':<12} {'STATE':<9} {'MARKERS':>9}  FINGERPRINT"]
    for s in states:
        lines.append(f"{s.stage.value:<12} {s.state:<9} {f'{s.done}/{s.total}':>9}  {s.fingerprint[:SHORT]}")
    if (state / "logs").is_dir():
        lines.append(f"logs: {state / 'logs'}/")
    lines.append(f"artifacts: `dynamics paths {spec.name} --workdir {spec.storage.workdir}`")
    return lines


def list_lines(runs: dict[str, str], here: Path) -> list[str]:
    """``dynamics list`` for work-dir runs: name, state summary and work dir, one line each."""
    if not runs:
        return []
    lines = [f"{'NAME':<24} {'STATE':<28} WORKDIR"]
    for name, spec_uri in sorted(runs.items()):
        spec = read_run(spec_uri)
        states = stage_states(spec, run_paths(spec))
        done = sum(s.state == "complete" for s in states)
        pid = runner_pid(state_dir(spec, here))
        summary = "running" if pid is not None else "complete" if done == len(states) else "stopped"
        lines.append(f"{name:<24} {f'{summary} ({done}/{len(states)} stages)':<28} {spec.storage.workdir}")
    return lines


def path_lines(spec: RunSpec) -> list[str]:
    """``dynamics paths RUN``: every artifact location of the run, with the fingerprint it is made for."""
    paths = run_paths(spec)
    fps = fingerprints(spec)

    def fp(stage: Stage) -> str:
        return fps[stage][:SHORT]

    rows: list[tuple[str, str, str]] = [
        ("run", "", paths.root),
        ("spec", "", paths.spec),
        ("embed", fp(Stage.EMBED), paths.embed_dir() + "/"),
        ("cluster-fit", fp(Stage.CLUSTER_FIT), paths.cluster_dir() + "/"),
        ("assign", fp(Stage.ASSIGN), join(paths.cluster_dir(), "assign") + "/"),
        ("scale", fp(Stage.SCALE), join(paths.root, C.DIR_SAMPLE) + "/"),
        ("train", fp(Stage.TRAIN), paths.checkpoints_dir() + "/"),
        ("tensorboard", fp(Stage.TRAIN), paths.tensorboard_dir() + "/"),
    ]
    if spec.embed.reduced_shards:
        rows.insert(3, ("reduced", fp(Stage.EMBED), join(paths.embed_dir(), "reduced") + "/"))
    if spec.eval is not None:
        rows.append(("eval", fp(Stage.EVAL), paths.eval_results))
    lines = [f"{'ARTIFACT':<12} {'FINGERPRINT':<16}  LOCATION"]
    lines += [f"{name:<12} {f or '-':<16}  {where}" for name, f, where in rows]
    lines.append(f"embed-<fp> and cluster-<fp> are the first {SHORT} hex digits of the stage's fingerprint: a hash "
                 "of the spec fields its output depends on and of its inputs' fingerprints; runs with equal "
                 "fields share those directories")
    return lines
