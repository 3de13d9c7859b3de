"""Helpers shared by the train-stage tests (data, sampling tables, specs, torchrun), and their checks."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

from dynamics.core.scaling import cluster_probs, cluster_targets
from dynamics.demo import generate_demo_data
from dynamics.stages.train.stream import load_table
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.objects import StorageConfig
from dynamics.storage.pattern import expand
from dynamics.storage.shards import SkipStats, iter_samples

TINY_MODEL: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
RUN = "trainrun"


def make_data(root: str, *, n_train: int = 600, shard_size: int = 50, seed: int = 0) -> dict[str, Any]:
    """Demo shards under ``root`` (local or s3://); returns the demo manifest's train section."""
    manifest = generate_demo_data(root, seed=seed, n_concepts=12, n_train=n_train, n_eval_per_class=1,
                                  shard_size=shard_size, image_size=64)
    return manifest["train"]


def write_tables(pattern: str, paths: RunPaths, cfg: StorageConfig | None = None, *,
                 alpha: float = 0.2, budget: float = 0.5) -> dict[str, dict[str, float]]:
    """Write per-shard tables as the scale stage does (keys, float32 probs, int32 cluster).

    Clusters are the demo's concepts, so probabilities follow the long tail. Returns
    ``{shard url: {key: p}}``.
    """
    shards: list[tuple[str, list[str], list[int]]] = []
    for url in expand(pattern):
        samples = list(iter_samples(url, cfg, SkipStats()))
        shards.append((url, [s.key for s in samples], [int(s.meta["concept"]) for s in samples]))
    clusters = np.concatenate([np.asarray(c, dtype=np.int64) for _, _, c in shards])
    sizes = np.bincount(clusters).astype(np.int64)
    probs = cluster_probs(sizes, cluster_targets(sizes, alpha, budget))
    out: dict[str, dict[str, float]] = {}
    for index, (url, keys, concepts) in enumerate(shards):
        p = probs[np.asarray(concepts)].astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys, dtype=str), probs=p, cluster=np.asarray(concepts, np.int32))
        storage.write_bytes(paths.shard_table(index), buf.getvalue(), cfg)
        out[url] = dict(zip(keys, p.tolist(), strict=True))
    return out


def spec_dict(workdir: str, pattern: str, n_samples: int, **train: Any) -> dict[str, Any]:
    """A valid run spec for a tiny CPU run (2 processes, 2 phases at 32 and 48 px)."""
    base_train: dict[str, Any] = {
        "modelConfig": TINY_MODEL,
        "contextLength": 16,
        "nodes": 1,
        "gpusPerNode": 0,
        "procsPerNode": 2,
        "workers": 1,
        "precision": "fp32",
        "phases": [
            {"name": "res32", "resolution": 32, "samples": 192, "samplesPerEpoch": 64,
             "batchPerGpu": 8, "lr": 5.0e-3, "warmup": 2},
            {"name": "res48", "resolution": 48, "samples": 96, "samplesPerEpoch": 32,
             "batchPerGpu": 8, "lr": 1.0e-3, "warmup": 1},
        ],
        "shuffleBuffer": 24,
        "checkpointEvery": 4,
        "logEvery": 2,
        "seed": 7,
    }
    base_train.update(train)
    return {
        "apiVersion": "dynamics.io/v1alpha1",
        "kind": "DynamicsRun",
        "name": RUN,
        "storage": {"workdir": workdir},
        "data": {"shards": pattern, "approxSamples": n_samples},
        "cluster": {"k": 12, "trainSamples": n_samples},
        "sample": {"alpha": 0.2, "budget": 0.5, "mode": "cap", "seed": 3},
        "train": base_train,
    }


def write_spec(path: str, spec: dict[str, Any]) -> str:
    """Write ``spec`` as YAML to the local file ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(spec, fh, sort_keys=False)
    return path


def torchrun(spec_path: str, nproc: int, env: dict[str, str], *, start_new_session: bool = False,
             log_path: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``torchrun --nproc-per-node N --no-python dynamics stage train`` (CPU, gloo)."""
    bindir = os.path.dirname(sys.executable)
    # --standalone: a private rendezvous on a free local port (a fixed port could clash in CI)
    cmd = [os.path.join(bindir, "torchrun"), "--standalone", "--nproc-per-node", str(nproc), "--no-python",
           os.path.join(bindir, "dynamics"), "stage", "train", "--spec", spec_path]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=start_new_session)


def descendants(pid: int) -> list[int]:
    """Process ids of all descendants of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and every process it started, as a pod deletion would.

    torchrun starts each trainer in its own session, so killing torchrun's group is not enough.
    """
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    proc.wait()


def read_keylog(directory: str, rank: int) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(phase, step): record}`` of one rank's key log; a later line for a step wins (resume)."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    with open(os.path.join(directory, f"rank{rank}.jsonl"), encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out[(rec["phase"], rec["step"])] = rec
    return out


def keys_in_order(log: dict[tuple[int, int], dict[str, Any]]) -> list[tuple[int, int, Sequence[str]]]:
    """(phase, step, keys) sorted by phase and step."""
    return [(p, s, tuple(log[(p, s)]["keys"])) for p, s in sorted(log)]


def test_written_tables_load_with_the_trainer_reader(tmp_path: Any) -> None:
    train = make_data(str(tmp_path / "data"), n_train=120, shard_size=40)
    paths = RunPaths.for_run(str(tmp_path / "work"), RUN)
    expected = write_tables(train["pattern"], paths)
    assert len(expected) == 3
    for index, (_url, probs) in enumerate(expected.items()):
        table = load_table(paths.shard_table(index), None, default_prob=0.5)
        assert set(table.keys) == set(probs)
        got = dict(zip(table.keys, table.probs.tolist(), strict=True))
        assert got == probs
    all_p = [p for probs in expected.values() for p in probs.values()]
    assert min(all_p) < max(all_p)  # long tail: clusters get different rates
