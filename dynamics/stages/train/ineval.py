"""Zero-shot eval on the spec's eval sets every ``train.evalEvery`` steps, while training.

Rank 0 evaluates (with FSDP the full weights are gathered first, by every rank, into a separate
copy of the model); the other ranks go on to the next step and wait for it at its first collective.
Results are logged as ``eval/<set>/top1`` and ``top5`` metrics and kept, one record per eval, in
``<run>/train/eval-during-training.json`` (rewritten whole, so S3 work directories work too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

from dynamics.spec.model import RunSpec
from dynamics.stages.evaluate import evaluate_dataset
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.objects import StorageConfig

log = logging.getLogger("dynamics.train")
METRICS_NAME = "eval-during-training.json"


def metrics_uri(paths: RunPaths) -> str:
    """Where the in-training eval records of a run go."""
    return paths.checkpoints_dir().rsplit("/", 1)[0] + "/" + METRICS_NAME


def is_due(every: int | None, done: int, total: int) -> bool:
    """Whether phase step ``done`` (1-based) of ``total`` ends with an eval."""
    return every is not None and (done % every == 0 or done == total)


@torch.no_grad()
def zero_shot(spec: RunSpec, model: torch.nn.Module, tokenize: Callable[[list[str]], torch.Tensor],
              device: torch.device, cfg: StorageConfig | None) -> dict[str, float]:
    """``{"<set>/top1": .., "<set>/top5": ..}`` of ``model`` on every eval set (restores train mode)."""
    assert spec.eval is not None, "checked with the spec (train.evalEvery needs eval)"
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    was_training = model.training
    model.eval()
    try:
        out: dict[str, float] = {}
        for ds in spec.eval.datasets:
            result = evaluate_dataset(model, tokenize, preprocess, ds, spec.eval.batch_size, device, cfg)
            for key in ("top1", "top5"):
                if result[key] is not None:
                    out[f"{ds.name}/{key}"] = float(result[key])
    finally:
        model.train(was_training)
    return out


def record(paths: RunPaths, cfg: StorageConfig | None, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the run's in-training eval records (a resumed run replaces repeated steps)."""
    uri = metrics_uri(paths)
    records: list[dict[str, Any]] = storage.read_json(uri, cfg) if storage.exists(uri, cfg) else []
    records = [r for r in records if (r["phase"], r["step"]) != (entry["phase"], entry["step"])]
    storage.write_json(uri, [*records, entry], cfg)
