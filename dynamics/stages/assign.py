"""``dynamics stage assign``: nearest kept centroid for one embed part (Indexed Job).

assign: every embedding of one part goes to its nearest kept centroid (top-1 inner product).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from dynamics.constants import Stage
from dynamics.core.kmeans import assign_nearest
from dynamics.core.scaling import counts_from_labels
from dynamics.core.whiten import whitening_from_array
from dynamics.spec.model import RunSpec, Whiten
from dynamics.stages.common import context_from_args, stage_parser
from dynamics.stages.inputs import already_done, marker, read_vectors, require_stage
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.cluster")


def assign_part(spec: RunSpec, paths: RunPaths, part: int, cfg: storage.StorageConfig) -> bool:
    """Write labels and per-cluster counts of ``part``; False when already complete."""
    if already_done(paths.assign_marker(part), spec, Stage.ASSIGN, cfg):
        log.info("assign part %d already complete; nothing to do", part)
        return False
    require_stage(spec, Stage.CLUSTER_FIT, [paths.cluster_marker], cfg)
    require_stage(spec, Stage.EMBED, [paths.embed_marker(part)], cfg)
    kept = storage.read_npy(paths.kept, cfg)
    vectors = read_vectors(paths, part, cfg)
    if spec.cluster.whiten is Whiten.PCA and len(vectors):
        vectors = whitening_from_array(storage.read_npy(paths.whitening, cfg)).apply(vectors)
    # At full scale (1M rows x 50k centroids per part) this is a GPU job: FAISS on the GPU when present.
    on_gpu = bool(spec.cluster.assign_gpu_count)  # GPUs asked for and none seen: an error, never a silent CPU run
    labels = (assign_nearest(vectors, kept, backend="faiss" if on_gpu else "numpy", gpu=on_gpu)
              if len(vectors) else np.zeros(0, np.int32))
    counts = counts_from_labels(labels, kept.shape[0])
    storage.write_npy(paths.assign_labels(part), labels.astype(np.int32), cfg)
    storage.write_npy(paths.assign_counts(part), counts, cfg)
    storage.write_marker(paths.assign_marker(part), marker(spec, Stage.ASSIGN, rows=int(labels.size),
                                                          clusters=int(kept.shape[0])), cfg)
    log.info("assign part %d: %d rows into %d clusters (%d non-empty)", part, labels.size, kept.shape[0],
             int(np.count_nonzero(counts)))
    return True


def main(argv: Sequence[str]) -> int:
    """Assign the part given by --index or JOB_COMPLETION_INDEX; a complete part is skipped."""
    parser = stage_parser("assign")
    ctx = context_from_args(parser.parse_args(list(argv)))

    assert ctx.index is not None
    assign_part(ctx.spec, ctx.paths, ctx.index, ctx.storage)
    return 0
