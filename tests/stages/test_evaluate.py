"""Zero-shot evaluation: scoring, class names, templates, class counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynamics.errors import DynamicsError
from dynamics.spec.model import EvalDataset
from dynamics.stages.evaluate import class_counts, classnames, score, templates
from dynamics.storage import objects as storage


def _ds(**kw) -> EvalDataset:
    return EvalDataset.model_validate({"name": "t", "shards": "x/{0..1}.tar", "classnames": ["a", "b"], **kw})


def test_score_overall_per_class_head_tail() -> None:
    names = ["common", "mid", "rare"]
    top1 = np.array([9, 5, 1])
    top5 = np.array([10, 10, 10])
    total = np.array([10, 10, 10])
    out = score(top1, top5, total, names, counts=np.array([1000, 100, 10]))
    assert out["top1"] == pytest.approx(15 / 30) and out["top5"] == 1.0
    assert out["per_class_top1"] == {"common": 0.9, "mid": 0.5, "rare": 0.1}
    assert out["head_classes"] == ["common"] and out["tail_classes"] == ["rare"]
    assert out["head_top1"] == pytest.approx(0.9) and out["tail_top1"] == pytest.approx(0.1)
    assert out["chance"] == pytest.approx(1 / 3)
    assert "head_top1" not in score(top1, top5, total, names, counts=None)


def test_classnames_sources(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("red circle\n\nblue square\n")
    assert classnames(_ds(classnames=str(tmp_path / "names.txt")), storage.StorageConfig()) == [
        "red circle", "blue square"]
    assert len(classnames(_ds(classnames="imagenet"), storage.StorageConfig())) == 1000
    assert classnames(_ds(), storage.StorageConfig()) == ["a", "b"]


def test_templates() -> None:
    assert [t("cat") for t in templates(_ds(templates=["a {c}.", "{c}!"]))] == ["a cat.", "cat!"]
    assert len(templates(_ds(templates="openai"))) == 80
    with pytest.raises(ValueError, match="must contain"):
        _ds(templates=["no placeholder"])


def test_class_counts_formats(tmp_path: Path) -> None:
    cfg = storage.StorageConfig()
    (tmp_path / "list.json").write_text("[5, 1]")
    (tmp_path / "manifest.json").write_text(json.dumps({"train": {"class_counts": [3, 4]}}))
    (tmp_path / "bad.json").write_text("[1, 2, 3]")
    assert class_counts(_ds(classCounts=str(tmp_path / "list.json")), 2, cfg).tolist() == [5, 1]
    assert class_counts(_ds(classCounts=str(tmp_path / "manifest.json")), 2, cfg).tolist() == [3, 4]
    assert class_counts(_ds(), 2, cfg) is None
    with pytest.raises(DynamicsError, match="expected 2 class counts"):
        class_counts(_ds(classCounts=str(tmp_path / "bad.json")), 2, cfg)
