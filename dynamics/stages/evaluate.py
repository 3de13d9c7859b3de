"""``dynamics stage eval``: zero-shot evaluation of the final checkpoint (single-pod Job).

The eval stage: zero-shot classification of the final checkpoint on webdataset eval sets.

Each eval set is image + ``.cls`` (class index) shards, as clip_benchmark writes them. Class names
and prompt templates come from the spec (``imagenet`` / ``openai`` / ``simple`` use open_clip's own
metadata). With the training-set class counts, classes are split by frequency into thirds: accuracy
on the most frequent third (head) and the least frequent third (tail) shows whether rare concepts
were learned -- what DynamiCS is for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.model import EvalDataset, RunSpec
from dynamics.stages.common import context_from_args, stage_parser
from dynamics.stages.gpu import stage_device
from dynamics.stages.inputs import already_done, marker, require_stage
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.shards import CorruptImage, SkipReason, SkipStats, decode_image, iter_samples, resolve_shards

log = logging.getLogger("dynamics.eval")


def classnames(ds: EvalDataset, cfg: storage.StorageConfig) -> list[str]:
    """Class names of an eval set: open_clip's ImageNet names, a file (one per line), or the spec's list."""
    if isinstance(ds.classnames, list):
        return ds.classnames
    if ds.classnames == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    text = storage.read_bytes(ds.classnames, cfg).decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def templates(ds: EvalDataset) -> list[Callable[[str], str]]:
    """Prompt templates as callables, the form open_clip's classifier builder takes."""
    if isinstance(ds.templates, list):
        return [lambda c, t=t: t.replace("{c}", c) for t in ds.templates]
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    return list(OPENAI_IMAGENET_TEMPLATES if ds.templates == "openai" else SIMPLE_IMAGENET_TEMPLATES)


def class_counts(ds: EvalDataset, n_classes: int, cfg: storage.StorageConfig) -> np.ndarray | None:
    """Training-set count per class, when the spec names a counts file."""
    if ds.class_counts is None:
        return None
    doc: Any = storage.read_json(ds.class_counts, cfg)
    if isinstance(doc, dict):
        doc = doc.get("class_counts", doc.get("train", {}).get("class_counts"))
    if not isinstance(doc, list) or len(doc) != n_classes:
        raise DynamicsError(f"{ds.class_counts}: expected {n_classes} class counts",
                            hint="a JSON list of counts, or an object with 'class_counts'", exit_code=2)
    return np.asarray(doc, dtype=np.int64)


def _batches(ds: EvalDataset, preprocess: Callable[[Any], torch.Tensor], batch_size: int,
             cfg: storage.StorageConfig, stats: SkipStats) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for url in resolve_shards(ds.shards, cfg):
        for sample in iter_samples(url, cfg, stats):
            if sample.label is None:
                stats.add("missing_label")
                continue
            try:
                images.append(preprocess(decode_image(sample.image, sample.image_ext)))
            except CorruptImage as exc:
                stats.add(exc.reason)
                continue
            labels.append(sample.label)
            if len(images) == batch_size:
                yield torch.stack(images), torch.tensor(labels)
                images, labels = [], []
    if images:
        yield torch.stack(images), torch.tensor(labels)


def _split_accuracy(correct: np.ndarray, total: np.ndarray, classes: np.ndarray) -> float | None:
    n = total[classes].sum()
    return float(correct[classes].sum() / n) if n else None


def score(top1: np.ndarray, top5: np.ndarray, total: np.ndarray, names: list[str],
          counts: np.ndarray | None) -> dict[str, Any]:
    """Accuracy summary from per-class correct/total counts (pure)."""
    n = int(total.sum())
    out: dict[str, Any] = {
        "n": n, "classes": len(names), "chance": 1.0 / len(names),
        "top1": float(top1.sum() / n) if n else None, "top5": float(top5.sum() / n) if n else None,
        "per_class_top1": {name: (float(top1[i] / total[i]) if total[i] else None) for i, name in enumerate(names)},
    }
    if counts is not None:
        order = np.argsort(-counts, kind="stable")
        third = max(1, len(names) // 3)
        head, tail = order[:third], order[-third:]
        out.update(head_top1=_split_accuracy(top1, total, head), tail_top1=_split_accuracy(top1, total, tail),
                   head_classes=[names[i] for i in head], tail_classes=[names[i] for i in tail])
    return out


@torch.inference_mode()
def evaluate_dataset(model: Any, tokenizer: Any, preprocess: Any, ds: EvalDataset, batch_size: int,
                     device: torch.device, cfg: storage.StorageConfig) -> dict[str, Any]:
    """Zero-shot top-1/top-5 of ``model`` on one eval set."""
    from open_clip import build_zero_shot_classifier

    names = classnames(ds, cfg)
    classifier = build_zero_shot_classifier(model, tokenizer=tokenizer, classnames=names,
                                            templates=templates(ds), num_classes_per_batch=16, device=device)
    k = min(5, len(names))
    top1 = np.zeros(len(names), np.int64)
    top5 = np.zeros(len(names), np.int64)
    total = np.zeros(len(names), np.int64)
    stats = SkipStats()
    for images, labels in _batches(ds, preprocess, batch_size, cfg, stats):
        if labels.max() >= len(names) or labels.min() < 0:
            raise DynamicsError(f"eval set {ds.name}: class index {int(labels.max())} but {len(names)} class names",
                                hint="check eval.datasets[].classnames", exit_code=2)
        feats = model.encode_image(images.to(device), normalize=True)
        pred = (feats @ classifier).topk(k, dim=1).indices.cpu()
        hit1 = (pred[:, 0] == labels).numpy()
        hit5 = (pred == labels[:, None]).any(dim=1).numpy()
        np.add.at(total, labels.numpy(), 1)
        np.add.at(top1, labels.numpy(), hit1)
        np.add.at(top5, labels.numpy(), hit5)
    result = score(top1, top5, total, names, class_counts(ds, len(names), cfg))
    # Eval sets are image + class: no captions is their format, not a problem worth reporting.
    result["skipped"] = {r: n for r, n in stats.to_dict().items() if r != SkipReason.MISSING_CAPTION.value}
    log.info("%s: top-1 %.3f, top-5 %.3f on %d images", ds.name, result["top1"] or 0, result["top5"] or 0,
             result["n"])
    return result


def evaluate(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> bool:
    """Evaluate the final checkpoint on every eval set; False when already complete."""
    if spec.eval is None:
        raise DynamicsError("the spec has no eval section", hint="add eval.datasets", exit_code=2)
    if already_done(paths.eval_marker, spec, Stage.EVAL, cfg):
        log.info("eval already complete (%s exists); nothing to do", paths.eval_marker)
        return False
    device = stage_device("eval.gpus", spec.eval.gpus)  # first: a pod that cannot use its GPUs fails at once
    require_stage(spec, Stage.TRAIN, [paths.train_marker], cfg)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from dynamics.stages.train.checkpoint import load_latest
    from dynamics.stages.train.model import create_model, load_weights, tokenizer

    latest = load_latest(paths, cfg)
    if latest is None:
        raise DynamicsError(f"no checkpoint under {paths.checkpoints_dir()}", hint="re-run the train stage")
    ref, payload = latest
    model = create_model(spec.train, spec.train.phases[-1].resolution, device)
    load_weights(model, payload["state_dict"])
    model.eval()
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tok = tokenizer(spec.train)
    results = {"checkpoint": ref.uri, "datasets": {
        ds.name: evaluate_dataset(model, tok, preprocess, ds, spec.eval.batch_size, device, cfg)
        for ds in spec.eval.datasets}}
    storage.write_json(paths.eval_results, results, cfg)
    storage.write_marker(paths.eval_marker, marker(spec, Stage.EVAL, checkpoint=ref.uri), cfg)
    return True


def main(argv: Sequence[str]) -> int:
    """Evaluate on every eval set of the spec; a complete evaluation is skipped."""
    parser = stage_parser("eval")
    ctx = context_from_args(parser.parse_args(list(argv)))

    evaluate(ctx.spec, ctx.paths, ctx.storage)
    return 0
