"""The ``dynamics experiment`` commands' parsers (light: torch and open_clip load only when one runs)."""

from __future__ import annotations

import argparse

DESCRIPTION = ("DynamiCS vs uniform sampling at equal compute (same data, embeddings, model, seeds and samples "
               "seen) on scikit-learn's bundled handwritten digits made long-tailed by class; prints mean +/- sd "
               "of overall/head/tail zero-shot top-1 and the paired difference with its 95%% interval.")


def _run(args: argparse.Namespace) -> int:
    from dynamics.experiment.longtail import run

    return run(args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``experiment longtail``."""
    p = sub.add_parser("longtail", help="DynamiCS vs uniform at equal compute on long-tailed digits (CPU)",
                       description=DESCRIPTION)
    p.add_argument("--seeds", type=int, default=3, help="paired seeds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--samples", type=int, default=25_600, help="samples seen per run (default 25600)")
    p.add_argument("--batch-size", type=int, default=128)
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
