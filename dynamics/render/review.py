"""Stage objects written for review (``--output-dir DIR --with-stages``): never part of what is applied.

Normally the controller creates each stage's objects when the previous stage is done, owned by the run
ConfigMap. Applied by hand they would be unowned, start stages out of order, and make the controller's
own create fail (409). So they go to ``DIR/review-only/`` as ``*.yaml.review`` files, which ``kubectl
apply -f DIR`` (even with ``-R``), Argo CD and Flux skip (they read only .yaml/.yml/.json), each with a
header saying so. Should one be applied anyway it still starts nothing: Jobs and PyTorchJobs are
suspended and carry no Kueue queue label (Kueue would admit, i.e. unsuspend, a queued workload).
"""

from __future__ import annotations

import copy
from pathlib import Path

from dynamics import constants as C
from dynamics.render.pod import Obj
from dynamics.render.yamlio import dump_object, file_name

REVIEW_DIR = C.REVIEW_DIR
REVIEW_SUFFIX = C.REVIEW_SUFFIX
HEADER = ("# REVIEW ONLY - do not apply. Written by `dynamics-submit --with-stages` to show what the run's\n"
          "# controller creates when stage {stage} starts (owned by the run ConfigMap). Applied by hand it\n"
          "# would be unowned and block the controller's own object; it is suspended and unqueued so that it\n"
          "# starts nothing if applied anyway.\n")


def _strip_queue(meta: Obj) -> None:
    (meta.get("labels") or {}).pop(C.LABEL_KUEUE_QUEUE, None)


def for_review(obj: Obj) -> Obj:
    """A copy of a stage object that cannot start when applied: suspended, labelled, with no queue label."""
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("labels", {})[C.LABEL_REVIEW] = C.REVIEW_SUSPENDED
    _strip_queue(out["metadata"])
    if out["kind"] == "Job":
        out["spec"]["suspend"] = True
        _strip_queue(out["spec"]["template"].get("metadata") or {})
    elif out["kind"] == "PyTorchJob":
        out["spec"].setdefault("runPolicy", {})["suspend"] = True
    return out


def write_review(objs: list[Obj], out_dir: Path) -> list[Path]:
    """Write stage objects (already :func:`for_review`) to ``out_dir/review-only/``; returns the paths."""
    review_dir = out_dir / REVIEW_DIR
    review_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, obj in enumerate(objs):
        path = review_dir / (file_name(i, obj) + REVIEW_SUFFIX)
        stage = obj["metadata"]["labels"].get(C.LABEL_STAGE, "?")
        path.write_text(HEADER.format(stage=stage) + dump_object(obj), encoding="utf-8")
        written.append(path)
    return written
