"""``dynamics estimate`` against a hand calculation for a small spec."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dynamics.cli.app import main
from dynamics.estimate import Rates, calibrate_image_share, estimate, patch_size
from tests.specs import make_spec, write_spec

PHASES = [
    {"name": "p1", "resolution": 112, "samples": 1000, "samplesPerEpoch": 400, "batchPerGpu": 100, "lr": 1e-3},
    {"name": "p2", "resolution": 224, "samples": 300, "batchPerGpu": 50, "lr": 1e-4},
]


def small_spec(tmp_path: Path):
    return make_spec(str(tmp_path / "runs"), "s3://b/{0..3}.tar", approx=2000,
                     embed={"backend": "pixels", "pixelsSize": 16, "parallelism": 4, "gpusPerPod": 0},
                     cluster={"k": 10, "trainSamples": 100, "iterations": 10},
                     train={"nodes": 1, "gpusPerNode": 2, "procsPerNode": None, "precision": "amp_bf16",
                            "checkpointEvery": 2, "phases": PHASES})


def test_estimate_matches_hand_calculation(tmp_path: Path) -> None:
    est = estimate(small_spec(tmp_path), Rates(), params=[1000, 1000])
    p1, p2 = est.phases
    # World 2: p1 global batch 200 -> 5 steps, 400 samples per epoch = 2 steps -> 3 epochs;
    # p2 global batch 100 -> 3 steps, default epoch budget 0.5 x 2000 = 1000 samples (10 steps) -> 1 epoch.
    assert (est.world_size, p1.global_batch, p1.steps, p1.epochs, p1.samples) == (2, 200, 5, 3, 1000)
    assert (p2.global_batch, p2.steps, p2.epochs, p2.samples) == (100, 3, 1, 300)
    assert est.expected_per_epoch == 1000
    assert (p1.samples_per_epoch, p2.samples_per_epoch) == (400, 300)  # 2 steps x 200; p2: all 3 steps
    # Only the image tower grows with resolution: at 224 px it has 4x the tokens of 112 px (196 vs 49
    # patches of 16 px), so a sample costs (1 - s) + 4 s of one at 112 px, s the tower's share there.
    s = Rates().image_share
    assert p1.samples_per_gpu_s == 2600 and p2.samples_per_gpu_s == pytest.approx(2600 / (1 + 3 * s))
    assert p1.gpu_hours == pytest.approx(1000 / 2600 / 3600)
    assert p2.wall_hours == pytest.approx(300 * (1 + 3 * s) / 2600 / 3600 / 2)
    assert p1.loader_cores_per_gpu == pytest.approx(2600 / Rates().loader_samples_per_core_s)
    assert p1.s3_bytes == pytest.approx(1000 / 0.5 * 40_000)
    # Every 2 steps plus the final: p1 steps 2, 4, 5; p2 steps 2, 3.
    assert (p1.checkpoints, p2.checkpoints, est.checkpoints) == (3, 2, 5)
    assert est.checkpoint_bytes == 12_000
    assert est.embed_bytes == 2000 * 768 * 2
    assert est.embed_wall_hours == pytest.approx(2000 / 2000 / 3600 / 4)
    assert est.kmeans_flops == 2 * 100 * 10 * 768 * 10
    assert est.assign_flops == 2 * 2000 * 10 * 768
    assert est.cluster_gpu_hours == pytest.approx((15_360_000 + 30_720_000) / 40e12 / 3600)


def test_reduced_copies_cut_s3_bytes_and_loader_cores_of_leading_low_res_phases(tmp_path: Path) -> None:
    raw = small_spec(tmp_path).model_dump(by_alias=True)
    # The faithful short side for 112 px at scale 0.4 is 208 px: p1 (112 px) reads the copies, p2 (224 px) not.
    raw["embed"]["reducedShards"] = True
    from dynamics.spec.loader import validate

    rates = Rates(loader_samples_per_core_s=400, reduced_loader_speedup=2.4, device_decode_speedup=2.2,
                  reduced_bytes_per_sample=7000)
    p1, p2 = estimate(validate(raw), rates, params=[1000, 1000]).phases
    assert p1.reduced and not p2.reduced
    assert p1.s3_bytes == pytest.approx(1000 / 0.5 * 7000)
    assert p1.loader_cores_per_gpu == pytest.approx(2600 / (400 * 2.4))
    assert p2.s3_bytes == pytest.approx(300 / 0.5 * 40_000)
    raw["train"]["decode"] = "device"  # workers only read tars and draw crop boxes: fewer cores
    p1, p2 = estimate(validate(raw), rates, params=[1000, 1000]).phases
    assert p1.loader_cores_per_gpu == pytest.approx(2600 / (400 * 2.4 * 2.2))
    assert p2.loader_cores_per_gpu == pytest.approx(rates.gpu_rate(224) / (400 * 2.2))


def test_cli_prints_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(tmp_path / "spec.yaml", small_spec(tmp_path))
    assert main(["estimate", str(path), "--params", "1000", "--samples-per-gpu", "1300"]) == 0
    out = capsys.readouterr().out
    assert "phase p1 (112 px, 49 image tokens): 5 steps x 200 = 1,000 samples; 1,300 samples/s/GPU" in out
    assert "phase p1 training epochs: 3 of 400 samples" in out
    assert "one pass over the data keeps ~1,000 samples (T = budget 0.5 x N)" in out
    # Every rate with its source; the one given on the command line says so.
    assert "--samples-per-gpu 1,300 samples/s per GPU (given)" in out
    assert "--loader-rate 737 samples/s per loader core (benchmarks/README.md" in out
    assert "--image-share 0.306 of t0 in the image tower (calibrated so the reference recipe" in out
    # One meaning of "epoch" per line: the sampler's pass and the training epoch never share a line.
    assert not any("per epoch" in line and "epochs:" in line for line in out.splitlines())
    assert f"loader cores per GPU {math.ceil(1300 / 737)} " in out
    assert "S3 read 80.0 MB; 3 checkpoint(s)" in out
    assert "checkpoints: 5 x 12.0 KB (1,000 parameters x 12 B) = 60.0 KB" in out


def test_parameter_count_from_the_model(tmp_path: Path) -> None:
    import open_clip  # noqa: F401  (the train extra)

    from dynamics.cli.tools import _model_params
    from dynamics.stages.train.model import create_model

    spec = small_spec(tmp_path)
    import torch

    real = sum(p.numel() for p in create_model(spec.train, 112, torch.device("cpu")).parameters())
    assert _model_params(spec)[0] == real


def test_bad_spec_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert main(["estimate", str(bad), "--params", "1"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_loader_short_of_cores_is_pointed_out_with_the_fixes(tmp_path: Path) -> None:
    from dynamics.spec.loader import validate

    rates = Rates(loader_samples_per_core_s=400, device_decode_speedup=2.2)  # not the published defaults
    raw = small_spec(tmp_path).model_dump(by_alias=True)
    raw["data"]["shards"] = "s3://b/{0..99}.tar"  # enough shards for every reader
    raw["train"].update(workers=4, resources={"cpu": "0.016k", "memory": "64Gi"})  # 16 CPUs: 8 per GPU, 4 workers
    notes = estimate(validate(raw), rates, params=[1000, 1000]).notes
    note = next(n for n in notes if "loader cores" in n)  # p1 needs 2600 / 400 = 6.5 -> 7 > 4
    assert "needs ~7 loader cores per GPU" in note and "has 4" in note
    assert "embed.reducedShards" in note and "train.decode: device" in note
    raw["train"]["workers"] = 8  # 8 workers and 8 CPUs per GPU: enough
    assert not any("loader cores" in n for n in estimate(validate(raw), rates, params=[1000, 1000]).notes)
    raw["train"].update(workers=4, decode="device")  # 2600 / (400 x 2.2) = 2.95 -> 3 <= 4
    assert not any("loader cores" in n for n in estimate(validate(raw), rates, params=[1000, 1000]).notes)
    raw["train"].update(resources={"cpu": "2500m", "memory": "64Gi"})  # 1.25 CPUs per GPU -> 1 < 3
    note = next(n for n in estimate(validate(raw), rates, params=[1000, 1000]).notes if "loader cores" in n)
    assert "has 1" in note and "train.decode" not in note


def test_image_share_calibrated_by_hand_on_the_reference() -> None:
    # Reference: 1.28B samples at 112 px and 128M at 224 px in 163 GPU-hours at 2,600 samples/s at 112 px.
    # Phase 1 takes 1.28e9 / 2600 / 3600 = 136.75 h, leaving 26.25 h for 128M samples at 224 px:
    # 1,354.5 samples/s, i.e. 738.3 us per sample against 384.6 us at 112 px. With t(224) = t0 (1 - s + 4 s):
    # s = (738.3 / 384.6 - 1) / 3 = 0.3065.
    t224 = (163 * 3600 - 1.28e9 / 2600) / 128e6
    by_hand = (t224 * 2600 - 1) / 3
    assert Rates().image_share == pytest.approx(by_hand) and by_hand == pytest.approx(0.3065, abs=5e-4)
    assert calibrate_image_share(2600, [(112, 1_280_000_000), (224, 128_000_000)], 163) == pytest.approx(by_hand)
    assert Rates().gpu_rate(224) == pytest.approx(1354.5, abs=0.5)
    # A ViT at 448 px has 16x the tokens of 112 px: the image tower's time grows 16x, the rest does not.
    assert Rates().gpu_rate(448) == pytest.approx(2600 / (1 - by_hand + 16 * by_hand))
    with pytest.raises(ValueError, match="two resolutions"):
        calibrate_image_share(2600, [(112, 1000)], 1.0)


def test_reference_recipe_reproduces_its_published_cost() -> None:
    from dynamics.spec.loader import load_spec

    spec = load_spec(Path(__file__).parents[1] / "examples" / "datacomp-dfn-vitb16.yaml")
    total = sum(p.gpu_hours for p in estimate(spec, Rates(), params=[1, 1]).phases)
    assert total == pytest.approx(163, rel=0.05)


def test_patch_size_of_model_names() -> None:
    assert [patch_size(m) for m in ("ViT-B-16", "ViT-B-32-quickgelu", "ViT-bigG-14", "RN50")] == [16, 32, 14, None]
