"""Rerunning a name with an edited spec: refused naming the change, or --replace clears exactly the stale stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from specs import make_spec

from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.loader import dump_spec
from dynamics.stages.common import storage_config
from dynamics.stages.inputs import already_done, marker
from dynamics.stages.progress import stage_complete
from dynamics.stages.rerun import check_rerun
from dynamics.storage import objects as storage

STAGES = list(Stage)


def _fake_run(workdir: Path, **sections: object):
    """A run whose every stage wrote its marker (and one output) for ``spec``."""
    spec = make_spec(str(workdir), "data/{0..1}.tar", **sections)
    paths, cfg = run_paths(spec), storage_config(spec)
    storage.write_bytes(paths.spec, dump_spec(spec).encode(), cfg)
    outputs = {Stage.EMBED: paths.embed_vectors(0), Stage.CLUSTER_FIT: paths.kept, Stage.SCALE: paths.probs,
               Stage.TRAIN: f"{paths.checkpoints_dir()}/x.pt", Stage.EVAL: paths.eval_results}
    for uri in outputs.values():
        storage.write_bytes(uri, b"x", cfg)
    for uri, stage in [(paths.embed_marker(0), Stage.EMBED), (paths.cluster_marker, Stage.CLUSTER_FIT),
                       (paths.assign_marker(0), Stage.ASSIGN), (paths.scale_marker, Stage.SCALE),
                       (paths.train_marker, Stage.TRAIN), (paths.eval_marker, Stage.EVAL)]:
        storage.write_marker(uri, marker(spec, stage), cfg)
    return spec, paths, cfg, outputs


def test_changed_alpha_is_refused_naming_field_and_stages(tmp_path: Path) -> None:
    spec, paths, cfg, _ = _fake_run(tmp_path)
    edited = make_spec(str(tmp_path), "data/{0..1}.tar", sample={"alpha": 0.5})
    with pytest.raises(DynamicsError) as err:
        check_rerun(edited, run_paths(edited), cfg, STAGES, replace=False, say=print)
    assert "sample.alpha (0.2 -> 0.5)" in str(err.value) and "invalidates scale, train, eval" in str(err.value)
    assert "--replace" in (err.value.hint or "")
    # Nothing was touched: the record still describes the artifacts.
    assert "alpha: 0.2" in storage.read_bytes(paths.spec, cfg).decode()
    assert already_done(paths.scale_marker, spec, Stage.SCALE, cfg)


def test_replace_clears_only_stale_own_stages(tmp_path: Path) -> None:
    _, paths, cfg, outputs = _fake_run(tmp_path)
    edited = make_spec(str(tmp_path), "data/{0..1}.tar", sample={"alpha": 0.5})
    said: list[str] = []
    changes = check_rerun(edited, run_paths(edited), cfg, STAGES, replace=True, say=said.append)
    assert list(changes) == [Stage.SCALE, Stage.TRAIN, Stage.EVAL] and "sample.alpha" in said[0]
    for stage in (Stage.SCALE, Stage.TRAIN, Stage.EVAL):
        assert not storage.exists(outputs[stage], cfg) and not stage_complete(edited, paths, stage, cfg)
    for stage in (Stage.EMBED, Stage.CLUSTER_FIT, Stage.ASSIGN):
        assert stage_complete(edited, run_paths(edited), stage, cfg)
    assert storage.exists(outputs[Stage.EMBED], cfg) and storage.exists(outputs[Stage.CLUSTER_FIT], cfg)


def test_marker_of_another_spec_is_not_complete_and_stage_refuses_it(tmp_path: Path) -> None:
    spec, paths, cfg, _ = _fake_run(tmp_path)
    edited = make_spec(str(tmp_path), "data/{0..1}.tar", sample={"budget": 0.25})
    assert stage_complete(spec, paths, Stage.SCALE, cfg)
    assert not stage_complete(edited, paths, Stage.SCALE, cfg)
    with pytest.raises(DynamicsError, match="different spec"):
        already_done(paths.scale_marker, edited, Stage.SCALE, cfg)


def test_recorded_spec_lacking_a_defaulted_field_is_not_a_change(tmp_path: Path) -> None:
    import yaml

    spec, paths, cfg, _ = _fake_run(tmp_path)
    recorded = yaml.safe_load(storage.read_bytes(paths.spec, cfg))
    del recorded["sample"]["decimals"]  # as a version of dynamics before that field would have written it
    storage.write_bytes(paths.spec, yaml.safe_dump(recorded).encode(), cfg)
    assert check_rerun(spec, paths, cfg, STAGES, replace=False, say=print) == {}


def test_inputs_are_verified_by_fingerprint_not_location(tmp_path: Path) -> None:
    from dynamics.stages.scale.main import cluster_sizes

    spec, paths, cfg, _ = _fake_run(tmp_path)
    # Outputs at the right place but made for other cluster settings (say, copied by hand).
    other = make_spec(str(tmp_path), "data/{0..1}.tar", cluster={"k": 3})
    storage.write_marker(paths.assign_marker(0), marker(other, Stage.ASSIGN), cfg)
    with pytest.raises(DynamicsError, match=r"assign outputs .* were made for a different spec"):
        cluster_sizes(spec, paths, cfg)
