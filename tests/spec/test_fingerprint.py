"""Stage fingerprints, their diffs, fingerprint-addressed shared artifacts, and ``--set`` overrides."""

from __future__ import annotations

import pytest
from specs import make_spec, spec_dict

from dynamics.constants import Stage
from dynamics.errors import SpecError
from dynamics.spec.fingerprint import describe, fingerprints, invalidated, run_paths
from dynamics.spec.loader import resolved_dict, validate
from dynamics.spec.overrides import apply_sets

SHARDS = "data/{0..3}.tar"


def _resolved(**sections: object) -> dict:
    return resolved_dict(make_spec("runs", SHARDS, **sections))


def test_alpha_invalidates_scale_train_eval_only_and_names_the_field() -> None:
    old, new = _resolved(), _resolved(sample={"alpha": 0.5})
    changes = invalidated(old, new)
    assert list(changes) == [Stage.SCALE, Stage.TRAIN, Stage.EVAL]
    assert [c.path for c in changes[Stage.SCALE]] == ["sample.alpha"]
    assert changes[Stage.TRAIN] == [] and changes[Stage.EVAL] == []
    assert "sample.alpha (0.2 -> 0.5)" in describe(changes)
    assert "invalidates scale, train, eval" in describe(changes)


def test_embed_field_invalidates_everything_downstream() -> None:
    changes = invalidated(_resolved(), _resolved(embed={"pixelsSize": 4}))
    assert list(changes) == [Stage.EMBED, Stage.CLUSTER_FIT, Stage.ASSIGN, Stage.SCALE, Stage.TRAIN, Stage.EVAL]
    assert [c.path for c in changes[Stage.EMBED]] == ["embed.pixelsSize"]


@pytest.mark.parametrize("sets", [
    ["embed.parallelism=7", "embed.batchSize=3"],
    ["cluster.assignParallelism=5", "cluster.gpus=1"],
    ["train.logEvery=3", "train.workers=4", "train.resources.cpu='9'"],
    ["kubernetes.backoffLimit=9"],
    ["name=other"],
])
def test_scheduling_settings_and_name_change_no_fingerprint(sets: list[str]) -> None:
    changed = resolved_dict(validate(apply_sets(spec_dict("runs", SHARDS), sets)))
    assert invalidated(_resolved(), changed) == {}


def test_runs_with_equal_embed_and_cluster_settings_share_those_artifacts() -> None:
    a = make_spec("runs", SHARDS)
    b = validate(apply_sets(spec_dict("runs", SHARDS), ["name=b", "sample.alpha=1.0"]))
    c = make_spec("runs", SHARDS, cluster={"k": 5})
    pa, pb, pc = run_paths(a), run_paths(b), run_paths(c)
    assert pa.embed_marker(0) == pb.embed_marker(0) == pc.embed_marker(0)
    assert pa.cluster_marker == pb.cluster_marker != pc.cluster_marker
    assert pa.assign_marker(1) == pb.assign_marker(1)
    assert pa.scale_marker != pb.scale_marker and pa.scale_marker.startswith("runs/quickstart/")
    assert "/_shared/embed-" in pa.embed_marker(0)
    assert fingerprints(a)[Stage.CLUSTER_FIT] == fingerprints(b)[Stage.CLUSTER_FIT]
    assert fingerprints(a)[Stage.SCALE] != fingerprints(b)[Stage.SCALE]


def test_set_overrides_values_lists_and_reports_bad_paths() -> None:
    data = spec_dict("runs", SHARDS)
    out = apply_sets(data, ["sample.alpha=0.5", "train.phases[1].lr=1e-3", "embed.model=x", "name=a05"])
    spec = validate(out)
    assert spec.sample.alpha == 0.5 and spec.train.phases[1].lr == 1e-3 and spec.name == "a05"
    assert data["sample"]["alpha"] == 0.2  # the parsed file is not modified
    with pytest.raises(SpecError, match="PATH=VALUE"):
        apply_sets(data, ["sample.alpha"])
    with pytest.raises(SpecError, match=r"no item \[9\]"):
        apply_sets(data, ["train.phases[9].lr=1"])
    with pytest.raises(SpecError, match="not a mapping"):
        apply_sets(data, ["name.x=1"])
    with pytest.raises(SpecError, match=r"sample\.alphaa"):
        validate(apply_sets(data, ["sample.alphaa=0.5"]))
