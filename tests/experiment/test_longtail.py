"""``dynamics experiment longtail`` end to end at reduced settings, and its statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynamics.experiment.digits import load_images, long_tail_split
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


@pytest.mark.slow
def test_experiment_command_reduced(tmp_path: Path) -> None:
    out = tmp_path / "longtail.json"
    result = subprocess.run([DYNAMICS, "experiment", "longtail", "--seeds", "2", "--samples", "1024",
                             "--batch-size", "64", "--k", "12", "-o", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "| tail |" in result.stdout and "paired difference" in result.stdout
    doc = json.loads(out.read_text())
    assert [r["seed"] for r in doc["runs"]] == [0, 1]
    for run in doc["runs"]:
        dyn, uni = run["dynamics"]["composition"], run["uniform"]["composition"]
        # Same data, different epochs: DynamiCS moves epoch share from the head to the tail classes.
        assert dyn["tail_epoch_share"] > uni["tail_epoch_share"]
        assert uni["tail_epoch_share"] == pytest.approx(uni["tail_data_share"], abs=0.02)
        assert 0 <= run["dynamics"]["scores"]["tail"] <= 1
        assert run["diagnostics"]["gini_after"] < run["diagnostics"]["gini_before"]
    diff = doc["summary"]["tail"]["diff"]
    assert diff["low"] <= diff["mean"] <= diff["high"]


def test_bad_settings_are_one_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = subprocess.run([DYNAMICS, "experiment", "longtail", "--seeds", "0", "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--seeds must be >= 1" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
