"""The cluster-size plot shows the epoch-composition effect: a uniform line at the same budget."""

from __future__ import annotations

import numpy as np

from dynamics.core.scaling import cluster_probs, cluster_targets
from dynamics.stages.scale.plot import plot_series, size_plot_png


def test_plot_has_a_uniform_line_at_the_same_budget() -> None:
    sizes = np.array([400, 0, 100, 20, 5], np.int64)
    probs = cluster_probs(sizes, cluster_targets(sizes, 0.2, 0.5))
    series = plot_series(sizes, probs, "cap", 0.2, 0.5)
    data, uniform, dyn = series.values()
    # Uniform keeps the data's proportions (targets are whole samples: within 0.5 of budget * n_c).
    np.testing.assert_allclose(uniform, 0.5 * data, atol=0.5)
    assert dyn[0] < uniform[0] and dyn[-1] > uniform[-1]  # DynamiCS takes from the head, gives to the tail
    assert dyn.sum() <= uniform.sum() + 1  # same budget (cap mode may fall short of it)
    assert size_plot_png(sizes, probs, "cap", 0.2, 0.5)[:4] == b"\x89PNG"
