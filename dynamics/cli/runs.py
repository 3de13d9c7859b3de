"""Subcommands of ``dynamics`` that talk to the cluster: controller, status, list, logs, cancel, doctor.

``dynamics.cli.app`` calls :func:`add_commands`; each handler takes the parsed arguments and returns an
exit code. The Kubernetes client is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from dynamics import constants as C
from dynamics.constants import Stage

if TYPE_CHECKING:
    from dynamics.controller.kube import Kube

Subparsers = argparse._SubParsersAction  # argparse exposes no public name for it


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", help="namespace (default: the context's, or 'default')")
    p.add_argument("--context", help="kubeconfig context (default: the current one, or in-cluster)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")


def _local(args: argparse.Namespace) -> bool:
    """Read a work dir instead of the cluster: with --workdir, or when no Kubernetes config exists at all
    (no --kubeconfig/--context, no $KUBECONFIG, no ~/.kube/config, not in a pod)."""
    if getattr(args, "workdir", None):
        return True
    return not (args.kubeconfig or args.context or os.environ.get("KUBECONFIG")
                or "KUBERNETES_SERVICE_HOST" in os.environ or os.path.isfile(os.path.expanduser("~/.kube/config")))


def _workdir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", help="read runs from this work directory (local path or s3://) instead of the "
                   "cluster; without a Kubernetes config, the runs under the current directory are read")


def _kube(args: argparse.Namespace, namespace: str | None = None) -> Kube:
    from dynamics.controller.kube import connect

    return connect(context=args.context, namespace=namespace or args.namespace, kubeconfig=args.kubeconfig)


def _cmd_controller(args: argparse.Namespace) -> int:
    from dynamics.controller.run import Controller, Poll
    from dynamics.stages.common import setup_logging

    setup_logging()
    kube = _kube(args, args.namespace or os.environ.get(C.ENV_NAMESPACE))
    poll = Poll(min_s=args.poll_min, max_s=max(args.poll_max, args.poll_min))
    return Controller(kube, args.run, poll=poll).loop()


def _cmd_status(args: argparse.Namespace) -> int:
    if _local(args):
        from pathlib import Path

        from dynamics.local.status import find_run, status_lines

        here = Path.cwd()
        print("\n".join(status_lines(find_run(args.run, args.workdir, here), here)))
        return 0
    from dynamics.controller.status import show_status, show_status_wide, status_json, status_yaml

    kube = _kube(args)
    if args.output in ("json", "yaml"):
        print(status_json(kube, args.run) if args.output == "json" else status_yaml(kube, args.run))
        return 0
    return (show_status_wide if args.output == "wide" else show_status)(kube, args.run, sys.stdout)


def _cmd_list(args: argparse.Namespace) -> int:
    if _local(args):
        from pathlib import Path

        from dynamics.local.status import list_lines, local_runs, runs_in

        here = Path.cwd()
        runs = runs_in(args.workdir) if args.workdir else local_runs(here)
        if not runs:
            print(f"no runs under {args.workdir or here}", file=sys.stderr)
            return 0
        print("\n".join(list_lines(runs, here)))
        return 0
    from dynamics.controller.status import list_runs

    return list_runs(_kube(args), sys.stdout, args.output)


def _cmd_logs(args: argparse.Namespace) -> int:
    from dynamics.controller.logs import show_logs

    return show_logs(_kube(args), args.run, sys.stdout, stage=args.stage, follow=args.follow)


def _cmd_cancel(args: argparse.Namespace) -> int:
    from dynamics.controller.status import cancel_run

    return cancel_run(_kube(args), args.run, sys.stdout, timeout_s=args.timeout)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from dynamics.controller.doctor import run_doctor
    from dynamics.spec.loader import load_spec

    spec = load_spec(args.spec) if args.spec else None
    namespace = args.namespace or (spec.namespace if spec else None)
    return run_doctor(_kube(args, namespace), spec, sys.stdout)


def add_commands(sub: Subparsers) -> None:
    """Register controller, status, list, logs, cancel and doctor on the ``dynamics`` parser."""
    p = sub.add_parser("controller", help="drive a run's stages (what the controller Job runs)")
    p.add_argument("--run", required=True, help="run name (its ConfigMap holds the spec)")
    p.add_argument("--poll-min", type=float, default=2.0, help="seconds between passes after a change")
    p.add_argument("--poll-max", type=float, default=30.0, help="longest wait while nothing changes")
    _connection_args(p)
    p.set_defaults(func=_cmd_controller)

    p = sub.add_parser("status", help="a run's stages, progress and pods")
    p.add_argument("run", help="run name")
    p.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"), default="table",
                   help="table (default), wide (plus per-stage counts and reasons), json or yaml (cluster runs)")
    _connection_args(p)
    _workdir_arg(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("list", help="the runs in a namespace")
    p.add_argument("-o", "--output", choices=("table", "wide", "name", "json", "yaml"), default="table",
                   help="table (default), wide (plus creation time and reason), name, json or yaml (cluster runs)")
    _connection_args(p)
    _workdir_arg(p)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("logs", help="a run's pod logs, each line prefixed by its pod")
    p.add_argument("run", help="run name")
    p.add_argument(
        "--stage", choices=[s.value for s in Stage] + [C.COMPONENT_CONTROLLER], help="only this stage's pods"
    )
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow every pod as it comes (waiting for those not started) until the run has finished")
    _connection_args(p)
    p.set_defaults(func=_cmd_logs)

    p = sub.add_parser("cancel", help="delete a run and everything it created, and wait")
    p.add_argument("run", help="run name")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the deletion")
    _connection_args(p)
    p.set_defaults(func=_cmd_cancel)

    p = sub.add_parser("doctor", help="check the cluster, RBAC, CRD, GPUs and storage for a run")
    p.add_argument("spec", nargs="?", help="run spec YAML (adds the storage and shard checks)")
    _connection_args(p)
    p.set_defaults(func=_cmd_doctor)


add_controller_commands = add_commands
