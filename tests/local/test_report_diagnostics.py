"""The end-of-run report's diagnostic lines: Gini before/after and whether the threshold fits."""

from __future__ import annotations

from dynamics.local.report import _diagnostic_lines


def test_diagnostic_lines_state_gini_and_threshold_fit() -> None:
    sampling = {"gini_before": 0.61, "gini_after": 0.32, "decile_shares": {"before": [], "after": []}}
    fit = {"diagnostics": {"nearest_kept_centroid_cosine": {"q50": 0.93},
                           "centroid_nearest_other_cosine": {"q50": 0.88}, "threshold": 0.7,
                           "share_centroids_with_neighbour_above_threshold": 0.95}}
    lines = _diagnostic_lines(sampling, fit)
    assert "0.61 (data) -> 0.32 (DynamiCS epoch)" in lines[0]
    assert "centroid to nearest other median 0.88 (refinement threshold 0.7; 95.0% of centroids" in lines[1]
    assert _diagnostic_lines(None, None) == []


def test_class_lines_state_head_and_tail_shares() -> None:
    from dynamics.local.report import _class_lines

    classes = {"definition": "head = most frequent third", "head_data_share": 0.6, "head_epoch_share": 0.45,
               "tail_data_share": 0.05, "tail_epoch_share": 0.11, "purity": 0.8}
    (line,) = _class_lines(classes)
    assert "head 60.0% of the data -> 45.0% of each epoch, tail 5.0% -> 11.0%; cluster purity 0.80" in line
    assert _class_lines(None) == []


def test_a_uniform_run_reports_uniform_epochs() -> None:
    from dynamics.local.report import sampling_lines

    report = {"alpha": 1.0, "budget": 0.5, "N": 3000, "K_nonempty": 47, "expected_per_epoch": 1500,
              "share_top10pct_before": 0.171, "share_top10pct_after": 0.171,
              "diagnostics": {"gini_before": 0.21, "gini_after": 0.21}}
    text = "\n".join(sampling_lines(report, None, "plot.png"))
    assert "DynamiCS epoch" not in text and "DynamiCS sampling" not in text
    assert text.startswith("\nuniform sampling (alpha=1.0, budget=0.5)")
    assert "-> 17.1% of each uniform epoch" in text and "0.21 (data) -> 0.21 (uniform epoch)" in text
    dynamic = "\n".join(sampling_lines({**report, "alpha": 0.2}, None, "plot.png"))
    assert "DynamiCS sampling (alpha=0.2" in dynamic and "of each DynamiCS epoch" in dynamic


def test_diagnostic_lines_state_separation_distance_from_uniform_and_warn_plainly() -> None:
    sampling = {"gini_before": 0.21, "gini_after": 0.06, "inclusion_tv_from_uniform": 0.04,
                "warning": "the embedding gives DynamiCS little to work with: the expected epoch is close to uniform"}
    fit = {"diagnostics": {"separation": {"own_centroid_cosine_median": 0.88,
                                          "nearest_other_centroid_cosine_median": 0.86,
                                          "separation_margin_median": 0.02}}}
    lines = _diagnostic_lines(sampling, fit)
    assert "total variation 0.040" in lines[1]
    assert "own centroid median 0.88, to the nearest other 0.86 (margin 0.02)" in lines[2]
    assert lines[-1] == f"  WARNING: {sampling['warning']}"
    assert not any("WARNING" in line for line in _diagnostic_lines(sampling, {}, "uniform"))  # uniform by choice
