"""Scale step at full size: N = 130M samples, K = 50,000 long-tailed clusters (DESIGN.md §5).

Times (1) per-part label arrays -> cluster sizes (``counts_from_labels``, what the scale stage does with
the assign stage's outputs) and (2) sizes -> targets -> p_c -> report. Target: the whole step well
under a minute on 2 cores. Label generation is not timed.

    .venv/bin/python benchmarks/bench_scale.py [--n 130000000] [--k 50000] [--parts 130]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from dynamics.core.scaling import counts_from_labels, scale


def zipf_probs(k: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Long-tailed cluster shares ~ rank^-exponent, in a random cluster order."""
    w = 1.0 / np.arange(1, k + 1, dtype=np.float64) ** exponent
    return rng.permutation(w / w.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=130_000_000)
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--parts", type=int, default=130, help="assign parts (~1M rows each)")
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    cdf = np.cumsum(zipf_probs(args.k, args.zipf, rng))
    cdf[-1] = 1.0
    part_rows = np.full(args.parts, args.n // args.parts)
    part_rows[: args.n % args.parts] += 1

    t_count = 0.0
    sizes = np.zeros(args.k, dtype=np.int64)
    for rows in part_rows.tolist():
        labels = np.searchsorted(cdf, rng.random(rows), side="right").astype(np.int32)
        t0 = time.perf_counter()
        sizes += counts_from_labels(labels, args.k)
        t_count += time.perf_counter() - t0
    print(f"labels generated and counted ({t_count:.2f} s counting)", file=sys.stderr)

    t0 = time.perf_counter()
    _, _, report = scale(sizes, alpha=0.2, budget=0.5, mode="cap")
    t_scale = time.perf_counter() - t0

    print(
        f"scale step N={args.n:,} K={args.k:,} (2 cores): labels->sizes {t_count:.2f} s + "
        f"sizes->p_c+report {t_scale * 1e3:.1f} ms = {t_count + t_scale:.2f} s vs target 60 s | "
        f"top1% share {report['share_top1pct_before']:.3f}->{report['share_top1pct_after']:.3f}, "
        f"norm. entropy {report['entropy_before_normalised']:.3f}->{report['entropy_after_normalised']:.3f}, "
        f"p>=1: {report['clusters_p_ge_1']} clusters, E[samples/epoch] {report['expected_per_epoch']:,.0f}"
    )


if __name__ == "__main__":
    main()
