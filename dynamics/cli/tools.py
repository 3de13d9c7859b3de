"""``dynamics demo-data``, ``export-probabilities``, ``export-model``, ``paths``, ``export-checkpoint``,
``estimate``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dynamics.errors import DynamicsError
from dynamics.experiment.cli import add_parser as add_longtail

if TYPE_CHECKING:  # the spec's pydantic models load only when a command runs, not for --help
    from dynamics.spec.model import RunSpec


def _demo_data(args: argparse.Namespace) -> int:
    from dynamics.demo import generate_demo_data

    manifest = generate_demo_data(args.dir, seed=args.seed, n_train=args.samples, shard_size=args.shard_size)
    train = manifest["train"]
    print(f"wrote {train['n_samples']} training samples ({train['pattern']}) and the eval set to {args.dir}")
    return 0


def _run_spec(run: str, workdir: str | None, command: str) -> RunSpec:
    """A spec file, or the resolved spec a run left in its work directory (``workdir`` overrides the spec's)."""
    from dynamics.spec.loader import load_spec, load_spec_text
    from dynamics.storage import objects as storage
    from dynamics.storage.layout import RunPaths

    if run.endswith((".yaml", ".yml")) or Path(run).is_file():
        spec = load_spec(run)
    elif not workdir:  # a local run, found from here (./<workdir>/<run>/spec.yaml, .dynamics/<run>/)
        from dynamics.local.status import find_run

        try:
            return find_run(run, None, Path.cwd())
        except DynamicsError as exc:
            raise DynamicsError(f"'{run}' is not a spec file, nor a run under the current directory",
                                hint=f"dynamics {command} {run} --workdir s3://bucket/prefix (or ./runs) ...",
                                exit_code=2) from exc
    else:
        uri = RunPaths.for_run(workdir, run).spec
        if not storage.exists(uri):
            raise DynamicsError(f"no run '{run}' under {workdir} ({uri} does not exist)",
                                hint=f"`dynamics list --workdir {workdir}` lists its runs", exit_code=2)
        spec = load_spec_text(storage.read_bytes(uri).decode("utf-8"), uri)
    if workdir and workdir != spec.storage.workdir:
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"workdir": workdir})})
    return spec


def _export(args: argparse.Namespace) -> int:
    from dynamics.spec.fingerprint import run_paths
    from dynamics.stages.common import storage_config
    from dynamics.stages.scale.export import export_ref_json

    spec = _run_spec(args.run, args.workdir, "export-probabilities")
    n = export_ref_json(spec, run_paths(spec), args.output, storage_config(spec))
    print(f"wrote {n} keys to {args.output}")
    return 0


def _export_model(args: argparse.Namespace) -> int:
    from dynamics.spec.fingerprint import run_paths
    from dynamics.stages.common import storage_config
    from dynamics.stages.train.export import export_model

    spec = _run_spec(args.run, args.workdir, "export-model")
    out = export_model(spec, run_paths(spec), Path(args.dir), storage_config(spec))
    print(f"wrote the final model of run '{spec.name}' to {out}/; load it with "
          f"open_clip.create_model_and_transforms('local-dir:{out}')")
    return 0


def _paths(args: argparse.Namespace) -> int:
    from dynamics.local.status import path_lines

    print("\n".join(path_lines(_run_spec(args.run, args.workdir, "paths"))))
    return 0


def _export_checkpoint(args: argparse.Namespace) -> int:
    from dynamics.stages.common import setup_logging
    from dynamics.stages.train.export import export_checkpoint

    setup_logging()
    out = export_checkpoint(args.checkpoint, args.output, None)
    print(f"wrote {args.output}: {len(out['state_dict'])} tensors (open_clip.load_checkpoint loads it)")
    return 0


def _model_params(spec: RunSpec) -> list[int]:
    """Parameter count of the spec's model at each phase's resolution (built on the meta device: no memory)."""
    try:
        import torch

        from dynamics.stages.train.model import create_model
    except ImportError as exc:  # e.g. the controller image: base dependencies only
        raise DynamicsError(f"counting the model's parameters needs torch and open_clip ({exc})",
                            hint="pass --params N, or install the train extra: pip install 'dynamics[train]'") from exc

    meta = torch.device("meta")
    with meta:
        return [sum(p.numel() for p in create_model(spec.train, ph.resolution, meta).parameters())
                for ph in spec.train.phases]


def _estimate(args: argparse.Namespace) -> int:
    from dynamics.estimate import RATE_SOURCES, Rates, estimate, format_estimate
    from dynamics.spec.loader import load_spec

    spec = load_spec(args.spec)
    rates = Rates(**{name: getattr(args, name) for name in RATE_SOURCES})
    params = [args.params] * len(spec.train.phases) if args.params else _model_params(spec)
    print(format_estimate(spec, estimate(spec, rates, params), rates))
    return 0


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    from dynamics.estimate import RATE_SOURCES, Rates

    d = Rates()
    p = sub.add_parser("estimate", help="print what a run will cost (steps, GPU-hours, loader cores, S3 bytes)",
                       description="Estimate a run's cost on the spec's hardware from stated rates.")
    p.add_argument("spec", help="run spec YAML")
    helps = {"gpu_samples_per_s": "training samples/s per GPU at --rate-resolution",
             "rate_resolution": "resolution the rate was measured at",
             "image_share": "share of a sample's GPU time spent in the image tower at --rate-resolution; only "
             "it grows with resolution, with the patch count (r/patch)^2",
             "loader_samples_per_core_s": "samples/s one loader core delivers",
             "bytes_per_sample": "average shard bytes per sample",
             "embed_images_per_gpu_s": "embed images/s per GPU",
             "gemm_tflops": "float32 GEMM TFLOPS for k-means/assignment",
             "reduced_bytes_per_sample": "bytes per sample of the reduced shard copies",
             "reduced_loader_speedup": "loader rate factor on reduced copies",
             "device_decode_speedup": "loader rate factor with train.decode: device"}
    for name, (flag, source) in RATE_SOURCES.items():
        default = getattr(d, name)
        p.add_argument(flag, dest=name, type=type(default), default=default, metavar="N",
                       help=f"{helps[name]} (default {default:,.4g}: {source})")
    p.add_argument("--params", type=int, default=None,
                   help="model parameter count (default: counted from the spec's open_clip model)")
    p.set_defaults(func=_estimate)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the commands on the ``dynamics`` parser."""
    p = sub.add_parser("demo-data", help="generate a small long-tailed image-text dataset (webdataset shards)",
                       description="Generate the quickstart's demo data: a long-tailed training set of "
                       "synthetic concepts with captions, and a balanced held-out eval set.")
    p.add_argument("dir", help="output directory or s3:// prefix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=3000, help="training samples (default 3000)")
    p.add_argument("--shard-size", type=int, default=250, help="samples per shard (default 250)")
    p.set_defaults(func=_demo_data)
    p = sub.add_parser("export-probabilities",
                       help="write the reference {__key__: probability} JSON of a run (after scale)")
    p.add_argument("run", help="the run's spec YAML, or the run's name together with --workdir")
    p.add_argument("--format", choices=["ref-json"], default="ref-json",
                   help="ref-json: one JSON object, as the original training fork loads")
    p.add_argument("-o", "--output", required=True, help="output file or s3:// URI")
    p.add_argument("--workdir", help="the work directory holding the run (default: the spec's storage.workdir)")
    p.set_defaults(func=_export)
    p = sub.add_parser("export-model", help="write a run's final model as a folder open_clip loads (local-dir:)",
                       description="Write the final checkpoint's weights (safetensors) and its open_clip config "
                       "(final image size, context length) to a new folder.")
    p.add_argument("run", help="the run's spec YAML, or the run's name together with --workdir")
    p.add_argument("dir", help="new local output folder")
    p.add_argument("--workdir", help="the work directory holding the run (default: the spec's storage.workdir)")
    p.set_defaults(func=_export_model)
    p = sub.add_parser("paths", help="every artifact location of a run, with the fingerprint it is made for",
                       description="Print where each stage's artifacts of a run are (embed and cluster ones "
                       "under _shared/<stage>-<fp>/), computed from the spec: no cluster needed.")
    p.add_argument("run", help="the run's spec YAML, or the run's name (with --workdir, or found under the "
                   "current directory)")
    p.add_argument("--workdir", help="the work directory holding the run (default: the spec's storage.workdir)")
    p.set_defaults(func=_paths)
    p = sub.add_parser("export-checkpoint", help="write one open_clip checkpoint file from a training checkpoint "
                       "(FSDP shards are consolidated)")
    p.add_argument("checkpoint", help="a .pt under <run>/train/checkpoints/ (local or s3://)")
    p.add_argument("-o", "--output", required=True, help="output .pt file or s3:// URI")
    p.set_defaults(func=_export_checkpoint)
    _add_estimate(sub)
    p = sub.add_parser("experiment", help="reproducible experiments on real data (longtail)",
                       description="Experiments that measure the method on real data, on a CPU.")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    add_longtail(experiments)
