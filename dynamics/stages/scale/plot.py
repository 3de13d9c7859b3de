"""The cluster-size plot: sizes by rank, uniform sampling at the same budget, and DynamiCS (log-log)."""

from __future__ import annotations

import io

import numpy as np

from dynamics.core.scaling import SampleMode, cluster_probs, cluster_targets, expected_counts


def uniform_counts(sizes: np.ndarray, budget: float, mode: SampleMode) -> np.ndarray:
    """Expected samples per cluster per epoch under uniform sampling (alpha = 1) at the same budget."""
    return expected_counts(sizes, cluster_probs(sizes, cluster_targets(sizes, 1.0, budget)), mode)


def plot_series(sizes: np.ndarray, probs: np.ndarray, mode: SampleMode, alpha: float,
                budget: float) -> dict[str, np.ndarray]:
    """The plotted lines, non-empty clusters ranked largest first: label -> values.

    Uniform sampling at the same budget is what an epoch would hold without DynamiCS: the gap between
    it and the DynamiCS line is the method's effect on the epoch's composition.
    """
    order = np.argsort(-sizes, kind="stable")
    order = order[sizes[order] > 0]
    return {
        "cluster size (all data)": sizes[order].astype(np.float64),
        f"uniform at the same budget ({budget:g})": uniform_counts(sizes, budget, mode)[order],
        f"DynamiCS per epoch (alpha={alpha:g}, {mode})": expected_counts(sizes, probs, mode)[order],
    }


def size_plot_png(sizes: np.ndarray, probs: np.ndarray, mode: SampleMode, alpha: float,
                  budget: float) -> bytes:
    """PNG bytes of the rank/size plot (deterministic: no timestamps in the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = plot_series(sizes, probs, mode, alpha, budget)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for (label, values), style in zip(series.items(), ("-", "--", "-"), strict=True):
        ranks = np.arange(1, values.size + 1)
        # log axes: an expected count of 0 is drawn at 1e-3 rather than dropped.
        ax.loglog(ranks, np.maximum(values, 1e-3), linestyle=style, label=label)
    ax.set_xlabel("cluster rank (by size)")
    ax.set_ylabel("samples")
    ax.set_title("DynamiCS: cluster sizes, and samples per epoch")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
