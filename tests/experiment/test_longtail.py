"""``dynamics experiment longtail`` end to end at reduced settings, and its statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynamics.core.scaling import cluster_probs, cluster_targets
from dynamics.experiment.digits import load_images, long_tail_split
from dynamics.experiment.longtail import composition_table, format_table, summarise
from dynamics.experiment.sampling import (
    Knobs,
    epoch_draw,
    oracle_probabilities,
    realised_shares,
    sample_stream,
)
from dynamics.experiment.stats import paired, t975

DYNAMICS = str(Path(sys.executable).parent / "dynamics")


def test_paired_interval_matches_the_t_formula() -> None:
    a, b = np.array([0.58, 0.6, 0.62]), np.array([0.4, 0.4, 0.4])
    d = paired(a, b)  # differences 0.18, 0.2, 0.22: mean 0.2, sd 0.02
    half = 4.303 * 0.02 / np.sqrt(3)
    assert (d.mean, d.low, d.high) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    assert d.excludes_zero
    assert not paired(np.array([0.5, 0.6, 0.7]), np.array([0.4, 0.4, 0.4])).excludes_zero  # sd 0.1: too wide
    with pytest.raises(ValueError):
        t975(0)


def test_split_is_long_tailed_balanced_for_eval_and_fixed_by_its_seed() -> None:
    images, labels = load_images()
    split = long_tail_split(images, labels, eval_per_class=40, imbalance=25, seed=0)
    counts = np.bincount(split.train_y, minlength=10)
    assert counts.max() / counts.min() == pytest.approx(25, rel=0.2)
    assert np.bincount(split.eval_y).tolist() == [40] * 10
    again = long_tail_split(images, labels, eval_per_class=40, imbalance=25, seed=0)
    assert again.train_x.tobytes() == split.train_x.tobytes()


def test_repeat_mode_draws_floor_copies_plus_a_bernoulli_one_and_cap_mode_at_most_one() -> None:
    p = np.array([2.25, 0.5, 1.0, 0.0])
    draws = [np.bincount(epoch_draw(p, np.random.default_rng(i), "repeat"), minlength=4) for i in range(1000)]
    counts = np.array(draws)
    assert set(np.unique(counts[:, 0])) == {2, 3} and set(np.unique(counts[:, 2])) == {1}
    assert counts.mean(axis=0) == pytest.approx(p, abs=0.06)  # expected uses per epoch = p
    capped = np.array([np.bincount(epoch_draw(p, np.random.default_rng(i)), minlength=4) for i in range(500)])
    assert capped.max() == 1 and capped.mean(axis=0) == pytest.approx(np.minimum(p, 1), abs=0.06)


def test_stream_redraws_each_epoch_and_the_key_log_gives_realised_shares() -> None:
    p = np.full(10, 0.5)
    stream = sample_stream(p, seed=3)
    first, second = [next(stream) for _ in range(5)], [next(stream) for _ in range(5)]
    assert first != second
    classes = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    log = [np.array([0, 1, 3]), np.array([5, 5, 6, 0])]
    assert realised_shares(classes, log, 4) == pytest.approx([3 / 7, 1 / 7, 3 / 7, 0])


def test_oracle_probabilities_are_the_scale_formula_with_clusters_as_classes() -> None:
    classes = np.repeat([0, 1, 2], [80, 15, 5])
    knobs = Knobs(k=3, iterations=1, threshold=0.7, whiten_dim=None, alpha=0.2, budget=0.5)
    sizes = np.array([80, 15, 5])
    want = cluster_probs(sizes, cluster_targets(sizes, 0.2, 0.5))
    got = oracle_probabilities(classes, knobs)
    assert got[[0, 80, 95]] == pytest.approx(want)
    assert got[95] > got[80] > got[0]  # the rarer the class, the likelier each of its samples


def _fake_run(seed: int, uniform_tail: float, gain: float) -> dict:
    def arm(tail: float, seen: float) -> dict:
        return {"scores": {"overall": 0.5, "head": 0.6, "tail": tail}, "realised_tail_share": seen,
                "composition": {"tail_epoch_share": seen, "purity": 0.9},
                "diagnostics": {"kept_clusters": 7, "separation": {"separation_margin_median": 0.2},
                                "inclusion_tv_from_uniform": 0.3}}
    uniform = arm(uniform_tail, 0.05)
    uniform["diagnostics"] = {}
    return {"seed": seed, "oracle_tail_epoch_share": 0.13, "uniform": uniform,
            "bootstrap": arm(uniform_tail + gain, 0.08)}


def test_each_arm_is_compared_with_uniform_on_the_same_seeds() -> None:
    runs = [_fake_run(s, t, g) for s, t, g in ((0, 0.3, 0.10), (1, 0.4, 0.12), (2, 0.2, 0.08))]
    arms = ("uniform", "bootstrap")
    summary = summarise(runs, arms)
    diff = summary["tail"]["bootstrap-diff"]
    want = paired(np.array([0.4, 0.52, 0.28]), np.array([0.3, 0.4, 0.2]))
    assert (diff["mean"], diff["low"], diff["high"]) == pytest.approx((want.mean, want.low, want.high))
    assert diff["excludes_zero"] and "uniform-diff" not in summary["tail"]
    table = "\n".join(format_table(summary, arms))
    assert "+10.0 [" in table and "| tail: vs uniform, paired (95% CI) | - |" in table
    rows = composition_table(runs, arms)
    assert rows[2].startswith("| uniform | 5.0% | 5.0% | 13.0% | - | - | - | - |")
    assert rows[3].startswith("| bootstrap | 8.0% | 8.0% | 13.0% | 0.90 | 7 | 0.200 | 0.300 |")


@pytest.mark.slow
def test_experiment_command_reduced(tmp_path: Path) -> None:
    out = tmp_path / "longtail.json"
    result = subprocess.run([DYNAMICS, "experiment", "longtail", "--seeds", "2", "--samples", "640",
                             "--bootstrap-samples", "320", "--batch-size", "32", "--k", "12", "-o", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "| tail: vs uniform, paired (95% CI) |" in result.stdout and "tail share seen" in result.stdout
    doc = json.loads(out.read_text())
    assert [r["seed"] for r in doc["runs"]] == [0, 1]
    for run in doc["runs"]:
        # Every arm sees the same number of samples; the bootstrap arm's count includes its uniform pass.
        assert {run[a]["seen"] for a in ("uniform", "bootstrap", "oracle", "oracle-repeat")} == {640}
        uni, oracle = run["uniform"], run["oracle"]
        assert oracle["realised_tail_share"] > uni["realised_tail_share"]
        assert oracle["composition"]["tail_epoch_share"] == pytest.approx(run["oracle_tail_epoch_share"])
        assert run["oracle-repeat"]["composition"]["tail_epoch_share"] > oracle["composition"]["tail_epoch_share"]
        assert 0 <= run["bootstrap"]["scores"]["tail"] <= 1
    diff = doc["summary"]["tail"]["bootstrap-diff"]
    assert diff["low"] <= diff["mean"] <= diff["high"]


def test_bad_settings_are_one_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = subprocess.run([DYNAMICS, "experiment", "longtail", "--seeds", "0", "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--seeds must be >= 1" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
