"""``render(spec) -> list[dict]``: every Kubernetes object of a run, as plain dicts. No I/O.

One renderer serves ``dynamics-submit --dry-run``, the golden files in ``manifests/``, the in-cluster
controller (which creates each stage's objects from :func:`render_stage`) and ``--local`` (which runs
the rendered containers' commands as processes).
"""

from __future__ import annotations

import hashlib

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.render.jobs import assign_job, cluster_fit_job, controller_job, embed_job, eval_job, scale_job
from dynamics.render.netpol import network_policies
from dynamics.render.pod import Obj, metadata
from dynamics.render.train import train_objects
from dynamics.spec import names
from dynamics.spec.loader import dump_spec
from dynamics.spec.model import RunSpec

__all__ = ["render", "render_config_map", "render_stage", "render_submission", "stages_of"]


def stages_of(spec: RunSpec) -> list[Stage]:
    """The stages this run goes through, in order (eval only when the spec has `eval:`)."""
    return [s for s in C.PIPELINE if s is not Stage.EVAL or spec.eval is not None]


def render_config_map(spec: RunSpec) -> Obj:
    """The run ConfigMap: the resolved spec; the controller adds status.json to it."""
    text = dump_spec(spec)
    meta = metadata(spec, names.config_map(spec.name), C.COMPONENT_RUN)
    meta["annotations"] = {C.ANNOTATION_SPEC_HASH: hashlib.sha256(text.encode()).hexdigest()}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {C.CONFIG_SPEC_KEY: text}}


def render_stage(spec: RunSpec, stage: Stage) -> list[Obj]:
    """The objects of one stage (what the controller creates when the stage starts)."""
    match stage:
        case Stage.EMBED:
            return [embed_job(spec)]
        case Stage.CLUSTER_FIT:
            return [cluster_fit_job(spec)]
        case Stage.ASSIGN:
            return [assign_job(spec)]
        case Stage.SCALE:
            return [scale_job(spec)]
        case Stage.TRAIN:
            return train_objects(spec)
        case Stage.EVAL:
            return [eval_job(spec)] if spec.eval is not None else []


def render_submission(spec: RunSpec) -> list[Obj]:
    """What `dynamics-submit` creates: the run ConfigMap, the run's NetworkPolicies (when enabled: the
    controller needs its API egress before it starts) and the controller Job, nothing else."""
    return [render_config_map(spec), *network_policies(spec), controller_job(spec)]


def render(spec: RunSpec) -> list[Obj]:
    """Every object of the run: submission objects, then each stage's objects in pipeline order."""
    out = render_submission(spec)
    for stage in stages_of(spec):
        out += render_stage(spec, stage)
    return out
