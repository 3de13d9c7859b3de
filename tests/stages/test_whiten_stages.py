"""cluster.whiten=pca through the stages: fitted and stored by cluster-fit, applied by assign; diagnostics
land in fit.json and report.json, and the plot carries the uniform line."""

from __future__ import annotations

import numpy as np
import pytest
from specs import make_spec

from dynamics.core.kmeans import assign_nearest
from dynamics.core.whiten import whitening_from_array
from dynamics.demo import generate_demo_data
from dynamics.stages.assign import assign_part
from dynamics.stages.cluster_fit import cluster_fit
from dynamics.stages.common import storage_config
from dynamics.stages.embed.run import embed_part
from dynamics.stages.inputs import read_vectors
from dynamics.stages.scale.main import scale_stage
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths


@pytest.mark.slow
def test_pca_whitening_is_stored_applied_and_diagnosed(s3_bucket: str) -> None:
    manifest = generate_demo_data(f"{s3_bucket}/demo", seed=3, n_concepts=6, n_train=240, shard_size=120,
                                  image_size=32, n_eval_per_class=1)
    cluster = {"k": 8, "trainSamples": 240, "iterations": 8, "whiten": "pca", "whitenDim": 12}
    runs = []
    for name in ("a", "b"):
        spec = make_spec(f"{s3_bucket}/{name}", manifest["train"]["pattern"], approx=240,
                         embed={"shardsPerPart": 1, "workers": 0}, cluster=cluster,
                         sample={"classReport": True})
        paths, cfg = RunPaths.for_run(spec.storage.workdir, spec.name), storage_config(spec)
        for part in (0, 1):
            embed_part(spec, paths, part, cfg)
        cluster_fit(spec, paths, cfg)
        for part in (0, 1):
            assign_part(spec, paths, part, cfg)
        scale_stage(spec, paths, cfg)
        runs.append((paths, cfg))

    (paths, cfg), (paths_b, _) = runs
    stored = storage.read_bytes(paths.whitening, cfg)
    assert stored == storage.read_bytes(paths_b.whitening, cfg)  # deterministic fit
    whitening = whitening_from_array(storage.read_npy(paths.whitening, cfg))
    kept = storage.read_npy(paths.kept, cfg)
    assert kept.shape[1] == whitening.dim <= 12
    # assign labelled each embedding by its nearest kept centroid in the whitened space.
    vectors = read_vectors(paths, 1, cfg)
    expected = assign_nearest(whitening.apply(vectors), kept)
    np.testing.assert_array_equal(storage.read_npy(paths.assign_labels(1), cfg), expected)

    fit = storage.read_json(paths.fit_json, cfg)
    assert fit["whiten"] == "pca"
    assert set(fit["diagnostics"]["nearest_kept_centroid_cosine"]) >= {"q10", "q50", "q90"}
    report = storage.read_json(paths.report, cfg)
    diag = report["diagnostics"]
    assert 0 <= diag["gini_after"] <= diag["gini_before"] < 1
    assert len(diag["decile_shares"]["before"]) == 10
    assert report["classes"] is None  # the demo's training shards carry no .cls labels


def test_class_report_maps_shard_labels_onto_assigned_clusters(s3_bucket: str, monkeypatch) -> None:
    """sample.classReport joins each embedded row's .cls label (by shard and key) with its cluster."""
    from dynamics.stages.scale import classes as cls_mod

    spec = make_spec(f"{s3_bucket}/c", f"{s3_bucket}/shard-{{0..1}}.tar", approx=6,
                     embed={"shardsPerPart": 2})
    paths, cfg = RunPaths.for_run(spec.storage.workdir, spec.name), storage_config(spec)
    for i in (0, 1):  # the shards must exist to resolve; their contents come from the patched reader
        storage.write_bytes(f"{s3_bucket}/shard-{i}.tar", b"", cfg)
    keys = ["a", "b", "c", "d", "e", "f"]
    monkeypatch.setattr(cls_mod, "read_keys", lambda *_: (np.array([0, 0, 0, 1, 1, 1]), keys))
    labels = {0: {"a": 0, "b": 0, "c": 1}, 1: {"d": 0, "e": 0, "f": 2}}
    monkeypatch.setattr(cls_mod, "_shard_labels", lambda url, _cfg: labels[int(url[-5])])
    storage.write_npy(paths.assign_labels(0), np.array([0, 0, 1, 0, 0, 1], np.int32), cfg)
    report = cls_mod.shard_class_report(spec, paths, np.array([0.25, 1.0]), cfg)
    assert report is not None
    assert report["head"] == ["0"] and report["tail"] == ["2"]
    assert report["head_data_share"] == round(4 / 6, 4)
    assert report["head_epoch_share"] == round(1 / 3, 4)  # 4 samples x p 0.25 vs 1 + 1 kept at p 1
    assert report["purity"] == round(5 / 6, 4)
