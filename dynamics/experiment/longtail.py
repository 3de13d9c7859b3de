"""``dynamics experiment longtail``: DynamiCS vs uniform sampling at equal compute on long-tailed digits.

For each seed, both arms share the data, the embeddings, the model initialisation and the number of
samples seen; they differ only in the per-sample probabilities: the scale formula at ``--alpha``
(DynamiCS) or at alpha = 1 (uniform) with the same budget. Zero-shot top-1 on the balanced held-out
set is reported overall and on the head / tail thirds of the classes (by training frequency).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from dynamics.errors import DynamicsError
from dynamics.experiment import clip, digits, sampling
from dynamics.experiment.arms import ARMS
from dynamics.experiment.stats import mean_sd, paired

UNIFORM = "uniform"
ARM_HELP = {
    UNIFORM: "uniform sampling (alpha = 1), all samples from a fresh model",
    "pixels": "DynamiCS on pixels + PCA-whitened k-means clusters (the CPU quickstart's recipe)",
    "bootstrap": "a uniform pass of --bootstrap-samples, then DynamiCS (cap mode) on k-means clusters of that "
                 "model's own image tower, continuing the same model for the rest of the samples",
    "oracle": "DynamiCS on clusters = the true classes (the ceiling of the mechanism; uses labels)",
    "oracle-repeat": "as oracle, with sample.mode repeat (floor(p) copies + Bernoulli(frac(p)))",
}
METRICS = ("overall", "head", "tail")


@dataclass(frozen=True)
class Setup:
    """One experiment's fixed settings (shared by every seed)."""

    knobs: sampling.Knobs
    bootstrap_knobs: sampling.Knobs  # the bootstrap arm's clustering (its own threshold and whitening)
    samples: int
    bootstrap_samples: int
    batch_size: int
    lr: float
    arms: tuple[str, ...]


def _arm_scores(per_class: np.ndarray, head: list[int], tail: list[int]) -> dict[str, float]:
    return {"overall": float(per_class.mean()), "head": float(per_class[head].mean()),
            "tail": float(per_class[tail].mean())}


def _clusters(arm: str, split: digits.Split, setup: Setup, seed: int,
              tower: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(per-sample cluster, per-sample probability, diagnostics) of an arm."""
    if arm == UNIFORM:
        return split.train_y, np.full(len(split.train_y), setup.knobs.budget), {}
    if arm.startswith("oracle"):
        return split.train_y, sampling.oracle_probabilities(split.train_y, setup.knobs), {}
    if arm == "pixels":
        return sampling.cluster_probabilities(sampling.pixel_embeddings(split.train_x), setup.knobs, seed)
    if tower is None:
        raise ValueError(f"arm {arm} needs the bootstrap model's embeddings")
    return sampling.cluster_probabilities(tower, setup.bootstrap_knobs, seed)


def run_seed(split: digits.Split, setup: Setup, seed: int) -> dict[str, Any]:
    """Every arm for one seed: scores, expected and realised class composition, and cluster diagnostics.

    All arms see ``setup.samples`` samples in all and start from the same initialisation; the bootstrap
    arms spend the first ``bootstrap_samples`` of them on a uniform pass whose model both embeds the data
    and is trained on (so the bootstrap counts against their budget).
    """
    train_img, eval_img = clip.image_tensor(split.train_x), clip.image_tensor(split.eval_x)
    uniform_p = np.full(len(split.train_y), setup.knobs.budget)
    boot_log: list[np.ndarray] = []
    boot_model, tower = None, None
    if any(a.startswith("bootstrap") for a in setup.arms):
        boot_model = clip.train_clip(train_img, split.train_y, sampling.sample_stream(uniform_p, seed),
                                     samples=setup.bootstrap_samples, batch_size=setup.batch_size, seed=seed,
                                     lr=setup.lr, key_log=boot_log)
        tower = clip.image_tower(boot_model, train_img)
    oracle = sampling.class_composition(split.train_y, split.train_y,
                                        sampling.oracle_probabilities(split.train_y, setup.knobs))
    out: dict[str, Any] = {"seed": seed, "oracle_tail_epoch_share": oracle["tail_epoch_share"]}
    for arm in setup.arms:
        clusters, probs, diag = _clusters(arm, split, setup, seed, tower)
        mode = "repeat" if arm.endswith("repeat") else "cap"
        key_log = list(boot_log) if arm.startswith("bootstrap") else []
        start = copy.deepcopy(boot_model) if arm.startswith("bootstrap") else None
        samples = setup.samples - (setup.bootstrap_samples if start is not None else 0)
        model = clip.train_clip(train_img, split.train_y, sampling.sample_stream(probs, seed, mode),
                                samples=samples, batch_size=setup.batch_size, seed=seed, lr=setup.lr,
                                model=start, key_log=key_log)
        composition = sampling.class_composition(split.train_y, clusters, probs, mode)
        names = digits.CLASS_NAMES
        head = [names.index(n) for n in composition["head"]]
        tail = [names.index(n) for n in composition["tail"]]
        realised = sampling.realised_shares(split.train_y, key_log, len(names))
        per_class = clip.zero_shot(model, eval_img, split.eval_y)
        out[arm] = {"scores": _arm_scores(per_class, head, tail), "composition": composition,
                    "seen": int(sum(len(k) for k in key_log)),
                    "realised_tail_share": round(float(realised[tail].sum()), 4),
                    "realised_class_shares": [round(float(v), 4) for v in realised],
                    "diagnostics": diag}
    return out


def summarise(runs: list[dict[str, Any]], arms: tuple[str, ...]) -> dict[str, Any]:
    """Mean/sd per arm and metric, and each arm's paired difference with uniform and its 95% interval."""
    table: dict[str, Any] = {}
    for metric in METRICS:
        values = {arm: np.array([r[arm]["scores"][metric] for r in runs]) for arm in arms}
        row: dict[str, Any] = {arm: mean_sd(values[arm]) for arm in arms}
        for arm in arms:
            if arm == UNIFORM or UNIFORM not in arms:
                continue
            diff = paired(values[arm], values[UNIFORM]) if len(runs) > 1 else None
            row[f"{arm}-diff"] = None if diff is None else asdict(diff) | {"excludes_zero": diff.excludes_zero}
        table[metric] = row
    return table


def format_table(summary: dict[str, Any], arms: tuple[str, ...]) -> list[str]:
    """The markdown table of scores (percent): mean +/- sd per arm, paired difference with uniform."""
    lines = ["| zero-shot top-1 | " + " | ".join(arms) + " |", "| --- |" + " ---: |" * len(arms)]
    for metric in METRICS:
        row = summary[metric]
        lines.append(f"| {metric} | " + " | ".join(f"{100 * row[a][0]:.1f} +/- {100 * row[a][1]:.1f}"
                                                   for a in arms) + " |")
    for metric in METRICS:
        cells = []
        for arm in arms:
            d = summary[metric].get(f"{arm}-diff")
            cells.append("-" if arm == UNIFORM or UNIFORM not in arms else "n/a (1 seed)" if d is None else
                         f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
        lines.append(f"| {metric}: vs uniform, paired (95% CI) | " + " | ".join(cells) + " |")
    return lines


def _mean_over(rows: list[dict[str, Any]], get: Any, fmt: str = ".3f") -> str:
    vals = [get(row) for row in rows]
    return "-" if any(v is None for v in vals) else format(float(np.mean(vals)), fmt)


def composition_table(runs: list[dict[str, Any]], arms: tuple[str, ...]) -> list[str]:
    """Per arm (means over seeds): the tail classes' share of the samples the model actually saw (key
    log), of an expected epoch, the oracle's expected share, purity, clusters and label-free measures."""
    oracle = np.mean([r["oracle_tail_epoch_share"] for r in runs])
    lines = ["| arm | tail share seen (key log) | tail share of an expected epoch | oracle's (cap) | purity | "
             "clusters | separation margin | TV from uniform |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm in arms:
        mean = partial(_mean_over, [r[arm] for r in runs])
        lines.append(" | ".join([
            f"| {arm}", mean(lambda a: 100 * a["realised_tail_share"], ".1f") + "%",
            mean(lambda a: 100 * a["composition"]["tail_epoch_share"], ".1f") + "%", f"{100 * oracle:.1f}%",
            "-" if arm == UNIFORM else mean(lambda a: a["composition"]["purity"], ".2f"),
            mean(lambda a: a["diagnostics"].get("kept_clusters"), ".0f"),
            mean(lambda a: a["diagnostics"].get("separation", {}).get("separation_margin_median")),
            mean(lambda a: a["diagnostics"].get("inclusion_tv_from_uniform"))]) + " |")
    return lines


def _seed_line(run: dict[str, Any], arms: tuple[str, ...]) -> str:
    parts = [f"{arm} {100 * run[arm]['realised_tail_share']:.1f}% seen -> {100 * run[arm]['scores']['tail']:.0f}%"
             for arm in arms]
    return f"  seed {run['seed']}: tail share of samples seen -> tail top-1: " + "; ".join(parts)


def _check(args: argparse.Namespace, n_train: int) -> None:
    unknown = [a for a in args.arms if a not in ARMS]
    problems = [msg for bad, msg in (
        (args.seeds < 1, "--seeds must be >= 1"),
        (args.batch_size < 2 or args.samples < args.batch_size, "--samples must be >= --batch-size >= 2"),
        (not 2 <= args.k <= n_train, f"--k must lie in [2, {n_train}] (the training images)"),
        (not 0 <= args.alpha <= 1 or not 0 < args.budget <= 1, "--alpha must lie in [0, 1], --budget in (0, 1]"),
        (not args.batch_size <= args.bootstrap_samples <= args.samples - args.batch_size,
         "--bootstrap-samples must lie in [--batch-size, --samples - --batch-size]"),
        (bool(unknown), f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}"),
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
    boot = sampling.Knobs(**{**asdict(knobs), "threshold": args.bootstrap_threshold,
                             "whiten_dim": None if args.bootstrap_whiten == "none" else args.whiten_dim})
    arms = tuple(a for a in ARMS if a in args.arms)
    setup = Setup(knobs, boot, args.samples, args.bootstrap_samples, args.batch_size, args.lr, arms)
    print(f"digits: {len(split.train_y)} training images (long-tailed, counts "
          f"{np.bincount(split.train_y, minlength=10).tolist()}), {len(split.eval_y)} eval images (balanced); "
          f"chance 10%; {args.samples} samples seen per run", flush=True)
    runs: list[dict[str, Any]] = []
    began = time.monotonic()
    for seed in range(args.seed, args.seed + args.seeds):
        start = time.monotonic()
        runs.append(run_seed(split, setup, seed))
        print(_seed_line(runs[-1], arms) + f" ({time.monotonic() - start:.0f}s)", flush=True)
        if args.output:  # after every seed, so an interrupted run keeps the seeds it finished
            _write(args, runs, arms)
    summary = summarise(runs, arms)
    print("\n".join(["", *format_table(summary, arms), "", *composition_table(runs, arms), "",
                     f"{args.seeds} seeds x {len(arms)} arms in {time.monotonic() - began:.0f}s"]))
    if args.output:
        print(f"\nresults: {args.output}", file=sys.stderr)
    return 0


def _write(args: argparse.Namespace, runs: list[dict[str, Any]], arms: tuple[str, ...]) -> None:
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"}, "summary": summarise(runs, arms),
                   "runs": runs}, fh, indent=1)
