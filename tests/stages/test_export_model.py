"""``dynamics export-model``: a folder open_clip loads by itself, at the final resolution, that classifies
zero-shot exactly like the run's own final model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import open_clip
import pytest
import torch
from specs import make_spec, write_spec

from dynamics.cli.app import main
from dynamics.constants import Stage
from dynamics.demo import generate_demo_data
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.model import EvalDataset
from dynamics.stages.common import storage_config
from dynamics.stages.evaluate import evaluate_dataset
from dynamics.stages.inputs import marker
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.model import create_model, open_clip_config, tokenizer
from dynamics.storage import objects as storage


def test_exported_folder_loads_with_open_clip_alone_and_scores_the_same(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    demo = generate_demo_data(str(tmp_path / "demo"), seed=0, n_concepts=4, n_train=40, shard_size=40,
                              image_size=32, n_eval_per_class=3)
    spec = make_spec(str(tmp_path / "runs"), demo["train"]["pattern"], approx=40)
    final_res = spec.train.phases[-1].resolution
    assert final_res != spec.train.model_config_["vision_cfg"]["image_size"]  # 48 vs the config's 32
    paths, cfg = run_paths(spec), storage_config(spec)
    torch.manual_seed(0)
    model = create_model(spec.train, final_res, torch.device("cpu")).eval()
    uri = f"{paths.checkpoints_dir()}/phase01-res48-step000000001.pt"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    ckpt.save(uri, {"format": ckpt.FORMAT, "epoch": 1, "name": "tiny", "state_dict": state}, cfg)
    storage.write_json(paths.model_config, open_clip_config(spec.train), cfg)
    storage.write_marker(paths.train_marker, marker(spec, Stage.TRAIN, final_checkpoint=uri), cfg)

    out = tmp_path / "exported"
    assert main(["export-model", str(write_spec(tmp_path / "spec.yaml", spec)), str(out)]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    assert saved["vision_cfg"]["image_size"] == final_res
    assert saved["text_cfg"]["context_length"] == spec.train.context_length

    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    loaded.eval()
    tok = open_clip.get_tokenizer(f"local-dir:{out}")
    ds = EvalDataset.model_validate({"name": "demo", "shards": demo["eval"]["pattern"],
                                     "classnames": demo["eval"]["classnames"], "templates": ["a {c}."]})
    theirs = evaluate_dataset(loaded, tok, preprocess, ds, 8, torch.device("cpu"), cfg)
    ours = evaluate_dataset(model, tokenizer(spec.train), preprocess, ds, 8, torch.device("cpu"), cfg)
    assert theirs["n"] == ours["n"] == 12
    assert theirs["top1"] == ours["top1"] and theirs["per_class_top1"] == ours["per_class_top1"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)

    assert main(["export-model", str(tmp_path / "spec.yaml"), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_folder_is_readable_as_the_umask_allows(tmp_path: Path, umask: int) -> None:
    from dynamics.stages.train.export import export_model

    spec = make_spec(str(tmp_path / "runs"), str(tmp_path / "{0..0}.tar"), approx=40)
    paths, cfg = run_paths(spec), storage_config(spec)
    model = create_model(spec.train, spec.train.phases[-1].resolution, torch.device("cpu"))
    uri = f"{paths.checkpoints_dir()}/final.pt"
    ckpt.save(uri, {"format": ckpt.FORMAT, "epoch": 1, "name": "tiny", "state_dict": model.state_dict()}, cfg)
    storage.write_marker(paths.train_marker, marker(spec, Stage.TRAIN, final_checkpoint=uri), cfg)
    old = os.umask(umask)
    try:
        out = export_model(spec, paths, tmp_path / "shared" / "model", cfg)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a folder teammates can open (was 0700)
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name  # and files they can read (was 0600)
