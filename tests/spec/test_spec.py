"""The run spec: examples validate; every mistake is reported at once, with its path, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dynamics.errors import SpecError
from dynamics.spec.loader import json_schema, load_spec, validate

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "datacomp-dfn-vitb16.yaml"
BIN = Path(sys.executable).parent


def recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def _errors(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        validate(data, "spec.yaml")
    return str(info.value)


def test_examples_validate() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.n_shards > 0


def test_recipe_matches_reference() -> None:
    spec = load_spec(RECIPE)
    assert spec.n_shards == 20069
    assert (spec.cluster.k, spec.cluster.threshold, spec.sample.alpha, spec.sample.budget) == (50000, 0.7, 0.2, 0.5)
    p1, p2 = spec.train.phases
    assert (p1.resolution, p1.samples, p1.batch_per_gpu, p1.lr) == (112, 1_280_000_000, 3500, 8.75e-4)
    assert (p2.resolution, p2.samples, p2.batch_per_gpu, p2.lr) == (224, 128_000_000, 1000, 1.25e-5)
    assert spec.train.nodes * spec.train.gpus_per_node * p1.batch_per_gpu == 28000
    o = spec.train.optimizer
    assert (o.beta1, o.beta2, o.eps, o.weight_decay) == (0.9, 0.95, 1e-6, 0.2)
    assert spec.train.context_length == 32 and spec.train.augmentation.scale == (0.4, 1.0)


def test_unknown_field_is_an_error() -> None:
    data = recipe()
    data["storage"]["credentalsSecret"] = "x"
    msg = _errors(data)
    assert "storage.credentalsSecret: unknown field" in msg


def test_all_problems_at_once() -> None:
    data = recipe()
    data["sample"]["alpha"] = 1.5
    data["sample"]["budget"] = 0
    data["name"] = "Bad_Name"
    data["train"]["phases"][0]["lr"] = -1
    msg = _errors(data)
    assert "4 problems" in msg
    for path in ("sample.alpha", "sample.budget", "name", "train.phases[0].lr"):
        assert f"- {path}:" in msg


def test_cross_field_problems_with_fixes() -> None:
    data = recipe()
    data["train"]["phases"][0]["resolution"] = 100
    data["data"]["shards"] = "s3://b/{0..9}.tar"
    msg = _errors(data)
    assert "train.phases[0].resolution: 100 is not divisible by the patch size 16" in msg
    assert "fix: use 96 or 112" in msg
    assert "data.shards: 10 shards cannot feed 64 readers" in msg


def test_name_length_counts_generated_suffixes() -> None:
    data = recipe()
    data["name"] = "a" * 50
    msg = _errors(data)
    assert "name:" in msg and "would exceed 63" in msg and "at most" in msg
    data["name"] = "a" * 40
    validate(data)


def test_resources_and_phases() -> None:
    data = recipe()
    data["train"]["resources"] = {"cpu": "lots", "memory": "16Gi"}
    data["train"]["phases"] = []
    msg = _errors(data)
    assert "train.resources.cpu" in msg and "train.phases" in msg


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstorage:\n  workdir: [unclosed\n")
    with pytest.raises(SpecError, match=r"line \d+, column \d+"):
        load_spec(bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120)


def test_cli_bad_spec_exit_2_without_traceback(tmp_path: Path) -> None:
    data = recipe()
    data["sample"]["alpha"] = 3
    data["bogus"] = 1
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    result = _cli("dynamics-submit", str(path), "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "sample.alpha" in result.stderr and "bogus: unknown field" in result.stderr
    assert result.stdout == ""


def test_cli_missing_file() -> None:
    result = _cli("dynamics-submit", "/nonexistent/spec.yaml", "--dry-run")
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_schema_command_is_the_pydantic_schema() -> None:
    result = _cli("dynamics", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(json_schema()))
    assert schema["additionalProperties"] is False
    assert {"name", "storage", "data", "train"} <= set(schema["required"])


def test_dry_run_recipe() -> None:
    result = _cli("dynamics-submit", str(RECIPE), "--dry-run")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    ptj = next(d for d in docs if d["kind"] == "PyTorchJob")
    assert ptj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert ptj["spec"]["nprocPerNode"] == "4"
    embed = next(d for d in docs if d["metadata"]["name"] == "dfn-vitb16-embed")
    assert embed["spec"]["completions"] * 64 >= 20069 > (embed["spec"]["completions"] - 1) * 64


def test_output_dir_writes_what_submit_creates(tmp_path: Path) -> None:
    result = _cli("dynamics-submit", str(RECIPE), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files] == [
        "dfn-vitb16", "dfn-vitb16-controller"]


def test_output_dir_with_stages_writes_them_for_review_only(tmp_path: Path) -> None:
    """Issue 20 item 14: review objects are not in DIR (`kubectl apply -f DIR` would wedge the run) but in
    DIR/review-only/*.yaml.review, which kubectl skips even with -R; suspended and without the Kueue queue
    label (Kueue admits, i.e. unsuspends, a queued Job), each with a do-not-apply header."""
    data = recipe()
    data["kubernetes"]["queueName"] = "team-queue"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = _cli("dynamics-submit", str(spec_path), "--output-dir", str(out), "--with-stages")
    assert result.returncode == 0, result.stderr
    applied = [yaml.safe_load(f.read_text()) for f in sorted(out.rglob("*.y*ml"))]
    assert [d["metadata"]["name"] for d in applied] == ["dfn-vitb16", "dfn-vitb16-controller"]
    files = sorted((out / "review-only").iterdir())
    assert files and all(f.name.endswith(".yaml.review") for f in files)
    stages = [yaml.safe_load(f.read_text()) for f in files]
    assert {d["kind"] for d in stages} >= {"Job", "PyTorchJob"} and len(stages) >= 5
    for f, d in zip(files, stages, strict=True):
        assert f.read_text().startswith("# REVIEW ONLY - do not apply.")
        assert d["metadata"]["labels"]["dynamics.io/review"] == "suspended"
        assert "kueue.x-k8s.io/queue-name" not in d["metadata"]["labels"], f.name
        if d["kind"] in ("Job", "PyTorchJob"):
            suspended = d["spec"]["runPolicy"]["suspend"] if d["kind"] == "PyTorchJob" else d["spec"]["suspend"]
            assert suspended is True, d["metadata"]["name"]


def test_every_schema_field_is_described() -> None:
    """Editors and the chart show these descriptions: a field without one is a field users must guess."""
    schema = json_schema()
    sections = {"RunSpec": schema, **schema["$defs"]}
    missing = [f"{name}.{field}" for name, section in sections.items()
               for field, prop in section.get("properties", {}).items() if "description" not in prop]
    assert missing == []
