"""Inputs checked before any work: model names, patch sizes, literal credentials, missing files, empty epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from specs import make_spec, spec_dict

from dynamics.constants import Stage
from dynamics.errors import DynamicsError, SpecError
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.loader import validate
from dynamics.spec.overrides import apply_sets
from dynamics.stages.common import storage_config
from dynamics.stages.inputs import marker
from dynamics.stages.preflight import check_inputs
from dynamics.stages.scale.main import scale_stage
from dynamics.storage import objects as storage

SHARDS = "data/{0..3}.tar"


def _named_model(model: str, resolution: int = 224) -> dict:
    data = spec_dict("runs", SHARDS)
    del data["train"]["modelConfig"]
    return apply_sets(data, [f"train.model={model}", f"train.phases[0].resolution={resolution}",
                             f"train.phases[1].resolution={resolution}"])


@pytest.mark.parametrize(("model", "expected"), [
    ("ViT-Tiny-Typo", "'ViT-Tiny-Typo' is not an open_clip model"),
    ("ViT-Z-99", "'ViT-Z-99' is not an open_clip model"),
    ("ViT-B-61", "did you mean 'ViT-B-16'"),
])
def test_unknown_model_is_a_spec_error_with_suggestions(model: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        validate(_named_model(model))
    assert expected in str(err.value) and "train.model" in str(err.value)
    assert "patch size" not in str(err.value)


def test_openai_spelling_is_normalised_and_real_patch_size_checked() -> None:
    assert validate(_named_model("ViT-L/14", 224)).train.model == "ViT-L-14"
    with pytest.raises(SpecError, match="not divisible by the patch size 14"):
        validate(_named_model("ViT-L/14", 200))


@pytest.mark.parametrize(("sets", "field"), [
    (["kubernetes.env=[{name: AWS_SECRET_ACCESS_KEY, value: abc123}]"], "kubernetes.env[0]"),
    (["kubernetes.env=[{name: HF_TOKEN, value: hf_abc}]"], "kubernetes.env[0]"),
    (["storage.endpoint=https://minio:s3cr3t@minio.local:9000"], "storage.endpoint"),
    (["embed.model=s3://AKIAABCDEFGHIJKLMNOP@bucket/model"], "embed.model"),
])
def test_literal_credentials_are_refused(sets: list[str], field: str) -> None:
    with pytest.raises(SpecError) as err:
        validate(apply_sets(spec_dict("runs", SHARDS), sets))
    assert field in str(err.value) and "Secret" in str(err.value)


def test_missing_shards_and_eval_files_are_found_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "0.tar").write_bytes(b"")
    data = spec_dict(str(tmp_path / "runs"), str(tmp_path / "data" / "{0..3}.tar"))
    data["eval"] = {"datasets": [{"name": "e", "shards": str(tmp_path / "data" / "{0..0}.tar"),
                                  "classnames": str(tmp_path / "classnames.txt")}]}
    with pytest.raises(DynamicsError) as err:
        check_inputs(validate(data))
    text = str(err.value)
    assert "2 inputs" in text and "3.tar does not exist" in text and "classnames.txt does not exist" in text
    assert "0.tar" not in text.replace("{0..", "")
    assert "--offline" in (err.value.hint or "")
    (tmp_path / "data" / "3.tar").write_bytes(b"")
    (tmp_path / "classnames.txt").write_text("a\n")
    check_inputs(validate(data))


def test_scale_refuses_a_budget_that_gives_an_empty_epoch(tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), "data/{0..1}.tar", approx=100, sample={"budget": 1e-7})
    paths, cfg = run_paths(spec), storage_config(spec)
    storage.write_npy(paths.assign_counts(0), np.array([60, 40], np.int64), cfg)
    storage.write_marker(paths.assign_marker(0), marker(spec, Stage.ASSIGN, rows=100, clusters=2), cfg)
    with pytest.raises(DynamicsError, match="empty epoch") as err:
        scale_stage(spec, paths, cfg)
    assert "sample.budget" in (err.value.hint or "")
    assert not storage.exists(paths.scale_marker, cfg) and not storage.exists(paths.probs, cfg)


def test_misspelt_fields_get_did_you_mean() -> None:
    data = apply_sets(spec_dict("runs", SHARDS), ["sample.alpah=0.5", "train.phases[0].resoluton=32", "clustr.k=3"])
    with pytest.raises(SpecError) as err:
        validate(data)
    text = str(err.value)
    assert "sample.alpah: unknown field; did you mean 'alpha'?" in text
    assert "train.phases[0].resoluton: unknown field; did you mean 'resolution'?" in text
    assert "clustr: unknown field; did you mean 'cluster'?" in text
