"""``embed.model`` name forms of the open_clip backend, and pinning ``run:RUN`` to the run's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from specs import make_spec, write_spec

from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.fingerprint import stage_fingerprint
from dynamics.stages.embed.modelref import ModelRef, parse_model_ref, pin_run_model
from dynamics.storage.layout import RunPaths


@pytest.mark.parametrize(("ref", "want"), [
    ("local-dir:/models/run-a", ModelRef("local-dir", "/models/run-a")),
    ("local-dir:s3://b/m:v2", ModelRef("local-dir", "s3://b/m:v2")),  # the whole rest is the path
    ("hf-hub:timm/vit-b-16", ModelRef("hf-hub", "hf-hub:timm/vit-b-16")),
    ("ViT-B-32", ModelRef("builtin", "ViT-B-32")),
    ("ViT-B-32:laion2b_s34b_b79k", ModelRef("builtin", "ViT-B-32", pretrained="laion2b_s34b_b79k")),
    ("ViT-B-32:/ckpt/epoch_3.pt", ModelRef("builtin", "ViT-B-32", pretrained="/ckpt/epoch_3.pt")),
    ("run:boot", ModelRef("run", "boot")),
    ("run:boot@0123456789abcdef", ModelRef("run", "boot", pin="0123456789abcdef")),
])
def test_every_open_clip_name_form_parses(ref: str, want: ModelRef) -> None:
    assert parse_model_ref(ref) == want


def _embed_with(workdir: str, model: str):
    return make_spec(workdir, "s3://b/shards/{000000..000001}.tar", name="bootstrap-2",
                     embed={"backend": "open_clip", "model": model, "gpusPerPod": 0})


def test_run_reference_is_pinned_to_the_source_runs_train_fingerprint(tmp_path: Path) -> None:
    workdir = str(tmp_path / "work")
    source = make_spec(workdir, "s3://b/shards/{000000..000001}.tar", name="bootstrap-1")
    (tmp_path / "work" / "bootstrap-1").mkdir(parents=True)
    write_spec(Path(RunPaths.for_run(workdir, "bootstrap-1").spec), source)
    train_fp = stage_fingerprint(source, Stage.TRAIN)

    spec = _embed_with(workdir, "run:bootstrap-1")
    pinned = pin_run_model(spec, None)
    assert pinned.embed.model == f"run:bootstrap-1@{train_fp[:16]}"
    # The weights' identity is in the embed fingerprint: a retrained source run changes it.
    assert stage_fingerprint(pinned, Stage.EMBED) != stage_fingerprint(spec, Stage.EMBED)
    assert pin_run_model(pinned, None) == pinned  # pinning is idempotent

    retrained = make_spec(workdir, "s3://b/shards/{000000..000001}.tar", name="bootstrap-1",
                          train={"contextLength": 12})
    write_spec(Path(RunPaths.for_run(workdir, "bootstrap-1").spec), retrained)
    with pytest.raises(DynamicsError, match="was retrained from another spec"):
        pin_run_model(pinned, None)
    assert pin_run_model(spec, None).embed.model != pinned.embed.model


def test_run_reference_to_a_missing_run_is_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(DynamicsError, match="no such run under") as info:
        pin_run_model(_embed_with(str(tmp_path), "run:nope"), None)
    assert "fix:" in str(info.value)


def test_other_models_are_not_touched(tmp_path: Path) -> None:
    spec = _embed_with(str(tmp_path), "local-dir:/m")
    assert pin_run_model(spec, None) is spec
