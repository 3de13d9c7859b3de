"""``dynamics export-probabilities``: the reference implementation's ``{__key__: probability}`` JSON.

For users of the original training fork, which loads one JSON object mapping every webdataset
``__key__`` to its probability. We stream it shard by shard from the per-shard tables into a temporary
file and upload that, so the export never holds all N keys in memory.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterator

from dynamics.constants import Stage
from dynamics.core.sampler import ShardTable, iter_ref_json
from dynamics.spec.model import RunSpec
from dynamics.stages.inputs import require_stage
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.export")


def _pairs(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> Iterator[tuple[str, float]]:
    for shard in range(spec.n_shards):
        table = ShardTable.from_bytes(storage.read_bytes(paths.shard_table(shard), cfg))
        yield from zip(table.keys, table.probs.tolist(), strict=True)


def export_ref_json(spec: RunSpec, paths: RunPaths, out: str, cfg: storage.StorageConfig) -> int:
    """Write the reference JSON to ``out`` (local path or s3://); returns the number of keys."""
    require_stage(spec, Stage.SCALE, [paths.scale_marker], cfg)
    total = 0

    def counted() -> Iterator[tuple[str, float]]:
        nonlocal total
        for pair in _pairs(spec, paths, cfg):
            total += 1
            yield pair

    # iter_ref_json consumes keys and probabilities in lockstep, so tee buffers at most one pair.
    a, b = itertools.tee(counted())
    keys = (k for k, _ in a)
    probs = (p for _, p in b)
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        for chunk in iter_ref_json(keys, probs, decimals=spec.sample.decimals):
            tmp.write(chunk)
        tmp.flush()
        storage.upload_file(tmp.name, out, cfg)
    log.debug("wrote %d keys to %s", total, out)  # the command prints the summary
    return total
