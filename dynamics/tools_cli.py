"""``dynamics demo-data`` and ``dynamics export-probabilities``."""

from __future__ import annotations

import argparse

from dynamics.layout import RunPaths
from dynamics.specio import load_spec


def _demo_data(args: argparse.Namespace) -> int:
    from dynamics.demo import generate_demo_data

    manifest = generate_demo_data(args.dir, seed=args.seed, n_train=args.samples, shard_size=args.shard_size)
    train = manifest["train"]
    print(f"wrote {train['n_samples']} training samples ({train['pattern']}) and the eval set to {args.dir}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dynamics.export import export_ref_json
    from dynamics.stages.common import StageContext, setup_logging

    setup_logging()
    spec = load_spec(args.spec)
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
    p.add_argument("spec", help="the run's spec YAML")
    p.add_argument("--format", choices=["ref-json"], default="ref-json",
                   help="ref-json: one JSON object, as the original training fork loads")
    p.add_argument("-o", "--output", required=True, help="output file or s3:// URI")
    p.add_argument("--workdir", help="override storage.workdir")
    p.set_defaults(func=_export)
