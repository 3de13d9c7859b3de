"""Issue 20 item 11: mistyped S3 URIs are refused everywhere; a cluster run refuses local storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dynamics.cli import app as cli
from dynamics.errors import SpecError
from dynamics.spec.checks import cluster_storage_problems, s3_typo
from dynamics.spec.loader import load_spec, validate

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "datacomp-dfn-vitb16.yaml"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


@pytest.mark.parametrize(("typo", "meant"), [
    ("s3:/my-bucket/runs", "s3://my-bucket/runs"),
    ("s3//my-bucket/runs", "s3://my-bucket/runs"),
    ("S3://my-bucket/runs", "s3://my-bucket/runs"),
    ("s3:///my-bucket/runs", "s3://my-bucket/runs"),
    ("s3:my-bucket/runs", "s3://my-bucket/runs"),
])
def test_s3_typos_are_refused_with_the_uri_meant(typo: str, meant: str) -> None:
    assert s3_typo(typo) == meant
    data = recipe()
    data["storage"]["workdir"] = typo
    data["data"]["shards"] = typo + "/{0..9}.tar"
    with pytest.raises(SpecError) as info:
        validate(data, "spec.yaml")
    text = str(info.value)
    assert f"storage.workdir: '{typo}' is not an S3 URI" in text
    assert f"fix: write it as '{meant}'" in text and f"fix: write it as '{meant}/{{0..9}}.tar'" in text


@pytest.mark.parametrize("fine", ["s3://b/runs", "runs", "./s3/runs", "/data/s3-runs", "s3/runs"])
def test_real_uris_and_local_paths_are_not_typos(fine: str) -> None:
    assert s3_typo(fine) is None


def test_cluster_storage_problems_name_every_local_path() -> None:
    assert cluster_storage_problems(load_spec(RECIPE)) == []
    local = load_spec(QUICKSTART)  # a --local spec: local workdir, shards and eval files
    paths = [p[0] for p in cluster_storage_problems(local)]
    assert paths == ["storage.workdir", "data.shards", "eval.datasets[0].shards",
                     "eval.datasets[0].classnames", "eval.datasets[0].classCounts"]


@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--output-dir", "OUT"], ["--helm-values"]])
def test_cluster_submission_refuses_a_local_workdir(
    mode: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: exit 0 and objects whose pods write into their own ephemeral filesystems."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))  # refused before any cluster access
    data = recipe()
    data["storage"]["workdir"] = "runs"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli.submit_main([str(path), "--offline", *[m.replace("OUT", str(tmp_path / "out")) for m in mode]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and not (tmp_path / "out").exists()
    assert "storage.workdir: 'runs' is a local path" in err
    assert "fix: use s3://BUCKET/PREFIX" in err and "--local" in err
