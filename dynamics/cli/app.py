"""Command-line entry points: ``dynamics`` and ``dynamics-submit``.

Heavy modules (torch, faiss, the kubernetes client) are imported only by the command that needs
them, so the controller image and ``--help`` stay light.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence

from dynamics import __version__
from dynamics.cli import runs as controller_cli
from dynamics.cli import tools as tools_cli
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.stages.commands import STAGE_COMMANDS, stage_parser

# `dynamics stage NAME ...` -> module with `main(argv) -> int`
STAGES: dict[str, str] = {name: command.module for name, command in STAGE_COMMANDS.items()}


def _run_guarded(fn: Callable[[], int]) -> int:
    """Run a command; user errors print one message and no traceback."""
    try:
        return fn()
    except DynamicsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _cmd_stage(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dynamics stage {" + ",".join(STAGES) + "} [options]\n\n"
              "Run one pipeline stage (what the rendered Jobs run). "
              "`dynamics stage NAME --help` shows its options.")
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    if name not in STAGES:
        print(f"error: unknown stage '{name}'; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    args = stage_parser(name).parse_args(rest)  # --help and usage errors before torch, faiss or open_clip load
    from dynamics.stages.common import setup_logging

    setup_logging()
    module = importlib.import_module(STAGES[name])
    code = int(module.main(rest))
    if code == 0:  # a failed stage leaves nothing behind, not even the record
        record_spec(args.spec, args.stage)
    return code


def record_spec(spec_file: str, stage: Stage) -> None:
    """Record the run's resolved spec as ``<workdir>/<run>/spec.yaml`` when nothing recorded it yet (a stage
    run by hand): ``dynamics status``, ``paths`` and reruns read it. An existing record is never replaced:
    it says what the run's artifacts were made for, and a changed spec is refused against it."""
    from dynamics.spec.fingerprint import run_paths
    from dynamics.spec.loader import dump_spec, load_spec
    from dynamics.stages.common import check_pinned_fingerprint, storage_config
    from dynamics.storage import objects as storage

    spec = load_spec(spec_file)
    check_pinned_fingerprint(spec, stage)  # a pod given another spec than its stage's records nothing
    uri, cfg = run_paths(spec).spec, storage_config(spec)
    if not storage.exists(uri, cfg):
        storage.write_bytes(uri, dump_spec(spec).encode("utf-8"), cfg)


def _cmd_schema(_: argparse.Namespace) -> int:
    from dynamics.spec.loader import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from dynamics.spec.loader import load_spec

    spec = load_spec(args.spec)
    print(f"{args.spec}: valid run '{spec.name}' ({spec.n_shards} shards, {len(spec.train.phases)} phases)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``dynamics`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="dynamics",
        description="DynamiCS CLIP pre-training on Kubernetes: stages, controller, and run tools.",
    )
    parser.add_argument("--version", action="version", version=f"dynamics {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("stage", help="run one pipeline stage (embed, cluster-fit, assign, scale, train, eval)",
                   add_help=False)
    p = sub.add_parser("schema", help="print the run spec's JSON schema (for editors and the chart)")
    p.set_defaults(func=_cmd_schema)
    p = sub.add_parser("validate", help="validate a run spec and report every problem")
    p.add_argument("spec", help="run spec YAML")
    p.set_defaults(func=_cmd_validate)
    tools_cli.add_commands(sub)
    controller_cli.add_commands(sub)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dynamics``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "stage":
        return _run_guarded(lambda: _cmd_stage(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _run_guarded(lambda: int(args.func(args)))


def submit_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dynamics-submit``."""
    from dynamics.cli.submit import run_submit

    argv = list(sys.argv[1:] if argv is None else argv)
    return _run_guarded(lambda: run_submit(argv))


if __name__ == "__main__":
    raise SystemExit(main())
