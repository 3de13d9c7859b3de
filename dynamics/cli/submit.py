"""``dynamics-submit spec.yaml``: validate, render, and submit (or print, write, or run locally)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dynamics import constants as C

if TYPE_CHECKING:  # rendering, the spec models and the input checks load after the arguments parse
    from dynamics.controller.kube import Kube
    from dynamics.render.pod import Obj
    from dynamics.spec.model import RunSpec

EPILOG = """\
examples:
  dynamics-submit spec.yaml --dry-run            print every object of the run as YAML
  dynamics-submit spec.yaml --output-dir out/    write what submit creates: ConfigMap + controller Job (GitOps)
  dynamics-submit spec.yaml --output-dir out/ --with-stages
                                                 also every stage's objects, for review only, in
                                                 out/review-only/*.yaml.review (kubectl apply skips them)
  dynamics-submit spec.yaml                      create the run in the current kubectl context
  dynamics-submit spec.yaml --local              run every stage here, as local processes (CPU)
  dynamics-submit spec.yaml --local --set sample.alpha=0.5 --set name=a05
                                                 a sweep point: reuses the first run's embeddings/clusters
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
    mode.add_argument("--output-dir", type=Path, metavar="DIR",
                      help="write what submit creates (run ConfigMap, NetworkPolicies, controller Job), one YAML "
                   "file each")
    mode.add_argument("--helm-values", action="store_true",
                      help="print the resolved spec as Helm values (`helm install NAME charts/dynamics -f -`)")
    mode.add_argument("--local", action="store_true",
                      help="run the stages as local processes (CPU; local work dir or any S3 endpoint)")
    p.add_argument("-n", "--namespace", help="namespace (default: the spec's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE",
                   help="override a spec field, e.g. --set sample.alpha=0.5 --set name=a05 (repeatable)")
    p.add_argument("--replace", action="store_true",
                   help="replace an existing run of the same name; --local: redo exactly the stages whose "
                   "inputs changed (a changed spec is refused without it)")
    p.add_argument("--wait", action="store_true", help="block until the run ends; non-zero exit on failure")
    p.add_argument("--context", help="kubeconfig context (default: current context, or in-cluster)")
    p.add_argument("--offline", action="store_true",
                   help="skip checking that the shards and eval files exist (e.g. only the cluster reaches them)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--with-stages", action="store_true",
                   help=f"--output-dir: also write every stage's objects for review only, to DIR/{C.REVIEW_DIR}/"
                   f"*.yaml{C.REVIEW_SUFFIX} (never applied: the controller creates them), suspended, without the "
                   f"Kueue queue label and labelled {C.LABEL_REVIEW}={C.REVIEW_SUSPENDED}")
    p.add_argument("--namespace-defaults", action="store_true",
                   help="--helm-values/--dry-run/--output-dir: fill unset fields from the namespace's "
                   f"{C.DEFAULTS_CONFIG_MAP} ConfigMap, as a submission does (needs cluster access)")
    p.add_argument("--workdir", help="--local: override storage.workdir (e.g. ./runs)")
    p.add_argument("--max-parallel", type=int, default=2, help="--local: indexed-job processes at once")
    return p


def run_submit(argv: Sequence[str]) -> int:
    """Entry point body of ``dynamics-submit`` (errors are handled by the caller)."""
    args = build_parser().parse_args(argv)
    from dynamics.render import render_submission
    from dynamics.render.yamlio import dump_all, write_dir
    from dynamics.spec.loader import validate
    from dynamics.stages.preflight import check_inputs

    local_only = args.dry_run or args.output_dir or args.helm_values or args.local
    if not local_only:
        return _submit_to_cluster(args)
    data = _spec_data(args)
    spec = validate(data, _source(args))
    if not args.local:  # --dry-run, --output-dir and --helm-values write objects for a cluster
        refuse_local_storage(spec, _source(args))
    if args.namespace_defaults and not args.local:
        spec = _with_namespace_defaults(args, data, spec)[1]
    if args.dry_run:
        sys.stdout.write(dump_all(render_submission(spec) + _stage_objects(spec, review=False)))
        return 0
    if args.helm_values:
        from dynamics.spec.schema import helm_values_yaml

        sys.stdout.write(helm_values_yaml(spec))
        return 0
    if args.output_dir:
        written = write_dir(render_submission(spec), args.output_dir)
        print(f"wrote {len(written)} objects to {args.output_dir}/")
        if args.with_stages:
            from dynamics.render.review import write_review

            review = write_review(_stage_objects(spec, review=True), args.output_dir)
            print(f"wrote {len(review)} stage objects for review only to {args.output_dir / C.REVIEW_DIR}/ "
                  f"(*.yaml{C.REVIEW_SUFFIX}: `kubectl apply -f {args.output_dir}` skips them; the controller "
                  "creates them)")
        return 0
    from dynamics.local.runner import run_local

    if not args.offline:
        check_inputs(spec)
    return run_local(spec, workdir=args.workdir, max_parallel=args.max_parallel, replace=args.replace)


def _check_rerun(spec: RunSpec, replace: bool) -> None:
    """An edited spec for an existing run name: refuse, or clear the stale stages and record the new spec
    (the controller keeps a recorded spec). Offline, the stages themselves refuse stale artifacts."""
    from dynamics.render import stages_of
    from dynamics.spec.fingerprint import run_paths
    from dynamics.spec.loader import dump_spec
    from dynamics.stages.common import storage_config
    from dynamics.stages.rerun import check_rerun
    from dynamics.storage import objects as storage

    paths, cfg = run_paths(spec), storage_config(spec)
    if check_rerun(spec, paths, cfg, stages_of(spec), replace, print):
        storage.write_bytes(paths.spec, dump_spec(spec).encode(), cfg)


def refuse_local_storage(spec: RunSpec, source: str) -> None:
    """Raise a SpecError (exit 2) naming every local path a cluster run cannot use (``--local`` may)."""
    from dynamics.errors import SpecError
    from dynamics.spec.checks import cluster_storage_problems

    problems = cluster_storage_problems(spec)
    if problems:
        lines = "\n".join(f"  - {path}: {message}\n      fix: {fix}" for path, message, fix in problems)
        raise SpecError(f"{source}: local storage in a cluster run:\n{lines}")


def _stage_objects(spec: RunSpec, review: bool) -> list[Obj]:
    from dynamics.render import render_stage, stages_of
    from dynamics.render.review import for_review

    objs = [obj for stage in stages_of(spec) for obj in render_stage(spec, stage)]
    return [for_review(o) for o in objs] if review else objs


def _source(args: argparse.Namespace) -> str:
    return f"{args.spec} (with --set)" if args.sets else str(args.spec)


def _spec_data(args: argparse.Namespace) -> dict:
    """The spec file parsed, with ``-n`` and every ``--set`` applied (validated by the caller)."""
    from dynamics.spec.loader import read_spec_data
    from dynamics.spec.overrides import apply_sets

    data = apply_sets(read_spec_data(args.spec), args.sets)
    if args.namespace:
        data["namespace"] = args.namespace
    return data


def _with_namespace_defaults(args: argparse.Namespace, data: dict, own: RunSpec) -> tuple[Kube, RunSpec]:
    """The spec with unset fields filled from the namespace's defaults (the Helm chart's); says which."""
    from dynamics.controller.defaults import namespace_defaults
    from dynamics.controller.kube import connect
    from dynamics.spec.loader import merge_defaults, validate

    kube = connect(context=args.context, namespace=own.namespace, kubeconfig=args.kubeconfig)
    data, taken = merge_defaults(namespace_defaults(kube), data)
    spec = validate(data, _source(args))
    if taken:  # on stderr: stdout may be the YAML being written
        print(f"namespace defaults ({C.DEFAULTS_CONFIG_MAP}) applied to: {', '.join(sorted(taken))}",
              file=sys.stderr if args.helm_values or args.dry_run else sys.stdout)
    return kube, spec


def _submit_to_cluster(args: argparse.Namespace) -> int:
    """Fill unset fields from the namespace's defaults (the Helm chart's), validate, submit."""
    from dynamics.controller.submit import submit
    from dynamics.spec.loader import validate
    from dynamics.stages.preflight import check_inputs

    data = _spec_data(args)
    # A bad spec is reported before any cluster access; the namespace defaults only fill optional fields
    # (storage.workdir and data.shards are required, so they are the spec's own).
    own = validate(data, _source(args))
    refuse_local_storage(own, _source(args))
    kube, spec = _with_namespace_defaults(args, data, own)
    if not args.offline:
        from dynamics.stages.common import storage_config
        from dynamics.stages.embed.modelref import pin_run_model

        # embed.model: run:NAME is pinned to that run's train fingerprint, as --local does, so that the
        # embed fingerprint (and every shared stage downstream) names the weights the pods will load.
        spec = pin_run_model(spec, storage_config(spec))
        check_inputs(spec)
        _check_rerun(spec, args.replace)
    return submit(spec, replace=args.replace, wait=args.wait, context=args.context, kube=kube)
