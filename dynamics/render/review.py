"""Stage objects written for review (``--output-dir --with-stages``): suspended, labelled, never started.

Normally the controller creates each stage's objects when the previous stage is done; applied all at
once they would start every stage together. Written for review they are suspended (a Job's
``spec.suspend``, a PyTorchJob's ``spec.runPolicy.suspend``) and labelled, so ``kubectl apply`` starts
nothing and ``kubectl get jobs -l dynamics.io/review`` finds them.
"""

from __future__ import annotations

import copy

from dynamics import constants as C
from dynamics.render.pod import Obj


def for_review(obj: Obj) -> Obj:
    """A copy of a stage object that cannot start when applied."""
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("labels", {})[C.LABEL_REVIEW] = C.REVIEW_SUSPENDED
    if out["kind"] == "Job":
        out["spec"]["suspend"] = True
    elif out["kind"] == "PyTorchJob":
        out["spec"].setdefault("runPolicy", {})["suspend"] = True
    return out
