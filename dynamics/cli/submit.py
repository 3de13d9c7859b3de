"""``dynamics-submit spec.yaml``: validate, render, and submit (or print, write, or run locally)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dynamics import constants as C
from dynamics.render import render
from dynamics.render.yamlio import dump_all, write_dir
from dynamics.spec.loader import load_spec, merge_defaults, read_spec_data, validate

EPILOG = """\
examples:
  dynamics-submit spec.yaml --dry-run            print every object of the run as YAML
  dynamics-submit spec.yaml --output-dir out/    write one file per object (GitOps)
  dynamics-submit spec.yaml                      create the run in the current kubectl context
  dynamics-submit spec.yaml --local              run every stage here, as local processes (CPU)
  dynamics-submit spec.yaml --helm-values > run.yaml && helm install NAME charts/dynamics -f run.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``dynamics-submit``."""
    p = argparse.ArgumentParser(
        prog="dynamics-submit",
        description="Validate a DynamiCS run spec, render its Kubernetes objects, and submit the run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="run spec YAML (see examples/ and `dynamics schema`)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the rendered objects, submit nothing")
    mode.add_argument("--output-dir", type=Path, metavar="DIR", help="write one YAML file per object")
    mode.add_argument("--helm-values", action="store_true",
                      help="print the resolved spec as Helm values (`helm install NAME charts/dynamics -f -`)")
    mode.add_argument("--local", action="store_true",
                      help="run the stages as local processes (CPU; local work dir or any S3 endpoint)")
    p.add_argument("-n", "--namespace", help="namespace (default: the spec's)")
    p.add_argument("--replace", action="store_true", help="delete an existing run of the same name first")
    p.add_argument("--wait", action="store_true", help="block until the run ends; non-zero exit on failure")
    p.add_argument("--context", help="kubeconfig context (default: current context, or in-cluster)")
    p.add_argument("--workdir", help="--local: override storage.workdir (e.g. ./runs)")
    p.add_argument("--max-parallel", type=int, default=2, help="--local: indexed-job processes at once")
    return p


def run_submit(argv: Sequence[str]) -> int:
    """Entry point body of ``dynamics-submit`` (errors are handled by the caller)."""
    args = build_parser().parse_args(argv)
    local_only = args.dry_run or args.output_dir or args.helm_values or args.local
    if not local_only:
        return _submit_to_cluster(args)
    spec = load_spec(args.spec)
    if args.namespace:
        spec = spec.model_copy(update={"namespace": args.namespace})
    if args.dry_run:
        sys.stdout.write(dump_all(render(spec)))
        return 0
    if args.helm_values:
        from dynamics.spec.schema import helm_values_yaml

        sys.stdout.write(helm_values_yaml(spec))
        return 0
    if args.output_dir:
        written = write_dir(render(spec), args.output_dir)
        print(f"wrote {len(written)} objects to {args.output_dir}/")
        return 0
    from dynamics.local.runner import run_local

    return run_local(spec, workdir=args.workdir, max_parallel=args.max_parallel)


def _submit_to_cluster(args: argparse.Namespace) -> int:
    """Fill unset fields from the namespace's defaults (the Helm chart's), validate, submit."""
    from dynamics.controller.defaults import namespace_defaults
    from dynamics.controller.kube import connect
    from dynamics.controller.submit import submit

    data = read_spec_data(args.spec)
    if args.namespace:
        data["namespace"] = args.namespace
    # A bad spec is reported before any cluster access; the namespace defaults only fill optional fields.
    own = validate(data, args.spec)
    kube = connect(context=args.context, namespace=own.namespace)
    data, taken = merge_defaults(namespace_defaults(kube), data)
    spec = validate(data, args.spec)
    if taken:
        print(f"namespace defaults ({C.DEFAULTS_CONFIG_MAP}) applied to: {', '.join(sorted(taken))}")
    return submit(spec, replace=args.replace, wait=args.wait, context=args.context, kube=kube)
