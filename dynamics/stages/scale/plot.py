"""The cluster-size plot: sizes by rank before sampling and expected per epoch after (log-log)."""

from __future__ import annotations

import io

import numpy as np

from dynamics.core.scaling import SampleMode, expected_counts


def size_plot_png(sizes: np.ndarray, probs: np.ndarray, mode: SampleMode, alpha: float) -> bytes:
    """PNG bytes of the rank/size plot (deterministic: no timestamps in the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-sizes, kind="stable")
    before = sizes[order]
    after = expected_counts(sizes, probs, mode)[order]
    nonempty = before > 0
    ranks = np.arange(1, int(nonempty.sum()) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.loglog(ranks, before[nonempty], label="cluster size (all data)")
    ax.loglog(ranks, np.maximum(after[nonempty], 1e-3), label=f"expected per epoch (alpha={alpha:g}, {mode})")
    ax.set_xlabel("cluster rank (by size)")
    ax.set_ylabel("samples")
    ax.set_title("DynamiCS: cluster sizes before and after sampling")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
