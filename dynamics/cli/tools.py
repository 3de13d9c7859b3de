"""``dynamics demo-data`` and ``dynamics export-probabilities``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamics.errors import DynamicsError
from dynamics.experiment.cli import add_parser as add_longtail
from dynamics.spec.loader import load_spec, load_spec_text
from dynamics.spec.model import RunSpec
from dynamics.storage.layout import RunPaths


def _demo_data(args: argparse.Namespace) -> int:
    from dynamics.demo import generate_demo_data

    manifest = generate_demo_data(args.dir, seed=args.seed, n_train=args.samples, shard_size=args.shard_size)
    train = manifest["train"]
    print(f"wrote {train['n_samples']} training samples ({train['pattern']}) and the eval set to {args.dir}")
    return 0


def _run_spec(run: str, workdir: str | None) -> RunSpec:
    """A spec file, or the resolved spec a run left in its work directory."""
    if run.endswith((".yaml", ".yml")) or Path(run).is_file():
        return load_spec(run)
    if not workdir:
        raise DynamicsError(f"'{run}' is not a spec file; to name a run, also give its --workdir",
                            hint=f"dynamics export-probabilities {run} --workdir s3://bucket/prefix -o probs.json",
                            exit_code=2)
    from dynamics.storage import objects as storage

    text = storage.read_bytes(RunPaths.for_run(workdir, run).spec).decode("utf-8")
    return load_spec_text(text, RunPaths.for_run(workdir, run).spec)


def _export(args: argparse.Namespace) -> int:
    from dynamics.stages.common import StageContext, setup_logging
    from dynamics.stages.scale.export import export_ref_json

    setup_logging()
    spec = _run_spec(args.run, args.workdir)
    ctx = StageContext(spec, RunPaths.for_run(args.workdir or spec.storage.workdir, spec.name), None)
    n = export_ref_json(spec, ctx.paths, args.output, ctx.storage)
    print(f"wrote {n} keys to {args.output}")
    return 0


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
    p = sub.add_parser("experiment", help="reproducible experiments on real data (longtail)",
                       description="Experiments that measure the method on real data, on a CPU.")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    add_longtail(experiments)
