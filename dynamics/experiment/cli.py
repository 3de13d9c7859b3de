"""The ``dynamics experiment`` commands' parsers (light: torch and open_clip load only when one runs)."""

from __future__ import annotations

import argparse

from dynamics.experiment.arms import ARMS

DESCRIPTION = ("DynamiCS vs uniform sampling at equal total samples seen (same data, model initialisation and seeds) "
               "on scikit-learn's bundled handwritten digits made long-tailed by class. Arms: "
               "uniform; pixels (pixel clusters, PCA-whitened); bootstrap (a uniform pass, counted in the budget, "
               "then clusters of that model's own image tower); oracle (clusters = classes); oracle-repeat "
               "(the same with sample.mode repeat). Prints mean +/- sd of overall/head/tail zero-shot top-1, "
               "each arm's paired difference with uniform (95%% t interval), and the tail classes' share of the "
               "samples each "
               "arm's model actually saw next to the oracle's.")


def _run(args: argparse.Namespace) -> int:
    from dynamics.experiment.longtail import run

    return run(args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``experiment longtail``."""
    p = sub.add_parser("longtail", help="DynamiCS vs uniform at equal compute on long-tailed digits (CPU)",
                       description=DESCRIPTION)
    p.add_argument("--seeds", type=int, default=8, help="paired seeds (default 8)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--samples", type=int, default=12_800, help="samples seen per run, bootstrap pass included "
                   "(default 12800)")
    p.add_argument("--bootstrap-samples", type=int, default=6_400,
                   help="bootstrap arm: samples of its uniform pass (default 6400)")
    p.add_argument("--bootstrap-threshold", type=float, default=0.90,
                   help="bootstrap arm: refinement threshold on the tower's cosines (default 0.90)")
    p.add_argument("--bootstrap-whiten", choices=["pca", "none"], default="none",
                   help="bootstrap arm: whitening of the tower's embeddings (default none)")
    default_arms = [a for a in ARMS if a != "pixels"]
    p.add_argument("--arms", nargs="+", default=default_arms, metavar="ARM",
                   help=f"arms to run, of {' '.join(ARMS)} (default: {' '.join(default_arms)})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--imbalance", type=float, default=25.0, help="commonest / rarest class (default 25)")
    p.add_argument("--eval-per-class", type=int, default=40)
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/eval split (fixed)")
    p.add_argument("--k", type=int, default=40, help="k-means centroids (default 40)")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--threshold", type=float, default=0.70, help="refinement threshold (default 0.70)")
    p.add_argument("--whiten", choices=["pca", "none"], default="pca")
    p.add_argument("--whiten-dim", type=int, default=32)
    p.add_argument("--alpha", type=float, default=0.2)
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the model is tiny)")
    p.add_argument("-o", "--output", help="write every run's scores, compositions and diagnostics as JSON")
    p.set_defaults(func=_run)
