"""``dynamics experiment longtail``: DynamiCS vs uniform sampling at equal compute on long-tailed digits.

For each seed, both arms share the data, the embeddings, the model initialisation and the number of
samples seen; they differ only in the per-sample probabilities: the scale formula at ``--alpha``
(DynamiCS) or at alpha = 1 (uniform) with the same budget. Zero-shot top-1 on the balanced held-out
set is reported overall and on the head / tail thirds of the classes (by training frequency).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from dynamics.errors import DynamicsError
from dynamics.experiment import clip, digits, sampling
from dynamics.experiment.stats import mean_sd, paired

ARMS = ("dynamics", "uniform")
METRICS = ("overall", "head", "tail")


def _arm_scores(per_class: np.ndarray, head: list[int], tail: list[int]) -> dict[str, float]:
    return {"overall": float(per_class.mean()), "head": float(per_class[head].mean()),
            "tail": float(per_class[tail].mean())}


def run_seed(split: digits.Split, knobs: sampling.Knobs, seed: int, samples: int,
             batch_size: int) -> dict[str, Any]:
    """Both arms for one seed: scores, class composition of their epochs, and the cluster diagnostics."""
    x = sampling.pixel_embeddings(split.train_x)
    clusters, p_dyn, diag = sampling.cluster_probabilities(x, knobs, seed)
    uniform = sampling.Knobs(**{**asdict(knobs), "alpha": 1.0})
    _, p_uni, _ = sampling.cluster_probabilities(x, uniform, seed)
    train_img, eval_img = clip.image_tensor(split.train_x), clip.image_tensor(split.eval_x)
    out: dict[str, Any] = {"seed": seed, "diagnostics": diag}
    for arm, probs in zip(ARMS, (p_dyn, p_uni), strict=True):
        composition = sampling.class_composition(split.train_y, clusters, probs)
        model = clip.train_clip(train_img, split.train_y, sampling.sample_stream(probs, seed), samples=samples,
                                batch_size=batch_size, seed=seed)
        per_class = clip.zero_shot(model, eval_img, split.eval_y)
        names = digits.CLASS_NAMES
        head = [names.index(n) for n in composition["head"]]
        tail = [names.index(n) for n in composition["tail"]]
        out[arm] = {"scores": _arm_scores(per_class, head, tail), "composition": composition}
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/sd per arm and metric, and the paired DynamiCS - uniform difference with its 95% interval."""
    table: dict[str, Any] = {}
    for metric in METRICS:
        values = {arm: np.array([r[arm]["scores"][metric] for r in runs]) for arm in ARMS}
        diff = paired(values["dynamics"], values["uniform"]) if len(runs) > 1 else None
        table[metric] = {**{arm: mean_sd(values[arm]) for arm in ARMS},
                         "diff": None if diff is None else asdict(diff) | {"excludes_zero": diff.excludes_zero}}
    return table


def format_table(summary: dict[str, Any]) -> list[str]:
    """The markdown table printed at the end (percent)."""
    lines = ["| zero-shot top-1 | DynamiCS | uniform | paired difference (95% CI) |",
             "| --- | ---: | ---: | ---: |"]
    for metric in METRICS:
        row = summary[metric]
        cells = [f"{100 * row[arm][0]:.1f} +/- {100 * row[arm][1]:.1f}" for arm in ARMS]
        d = row["diff"]
        cells.append("n/a (1 seed)" if d is None else
                     f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines


def _composition_line(run: dict[str, Any]) -> str:
    d, u = run["dynamics"]["composition"], run["uniform"]["composition"]
    return (f"  seed {run['seed']}: head share of an epoch {100 * u['head_epoch_share']:.1f}% (uniform) -> "
            f"{100 * d['head_epoch_share']:.1f}% (DynamiCS); tail {100 * u['tail_epoch_share']:.1f}% -> "
            f"{100 * d['tail_epoch_share']:.1f}%; purity {d['purity']:.2f}; "
            f"{run['diagnostics']['kept_clusters']} clusters, Gini {run['diagnostics']['gini_before']:.2f}")


def _check(args: argparse.Namespace, n_train: int) -> None:
    problems = [msg for bad, msg in (
        (args.seeds < 1, "--seeds must be >= 1"),
        (args.batch_size < 2 or args.samples < args.batch_size, "--samples must be >= --batch-size >= 2"),
        (not 2 <= args.k <= n_train, f"--k must lie in [2, {n_train}] (the training images)"),
        (not 0 <= args.alpha <= 1 or not 0 < args.budget <= 1, "--alpha must lie in [0, 1], --budget in (0, 1]"),
    ) if bad]
    if problems:
        raise DynamicsError("; ".join(problems), hint="see dynamics experiment longtail --help", exit_code=2)


def run(args: argparse.Namespace) -> int:
    """The ``dynamics experiment longtail`` command."""
    import torch

    torch.set_num_threads(args.threads)
    images, labels = digits.load_images()
    split = digits.long_tail_split(images, labels, eval_per_class=args.eval_per_class,
                                   imbalance=args.imbalance, seed=args.split_seed)
    _check(args, len(split.train_y))
    knobs = sampling.Knobs(k=args.k, iterations=args.iterations, threshold=args.threshold,
                           whiten_dim=None if args.whiten == "none" else args.whiten_dim,
                           alpha=args.alpha, budget=args.budget)
    print(f"digits: {len(split.train_y)} training images (long-tailed, counts "
          f"{np.bincount(split.train_y, minlength=10).tolist()}), {len(split.eval_y)} eval images (balanced); "
          f"chance 10%", flush=True)
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        start = time.monotonic()
        runs.append(run_seed(split, knobs, seed, args.samples, args.batch_size))
        print(_composition_line(runs[-1]) + f" ({time.monotonic() - start:.0f}s)", flush=True)
    summary = summarise(runs)
    print("\n".join(["", *format_table(summary)]))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"}, "summary": summary,
                       "runs": runs}, fh, indent=1)
        print(f"\nresults: {args.output}", file=sys.stderr)
    return 0
