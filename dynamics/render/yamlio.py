"""YAML output of rendered objects (no anchors/aliases: kubectl and GitOps tools expect plain YAML)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from dynamics.render.pod import Obj


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line values (the resolved spec in the ConfigMap) read best as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlainDumper.add_representer(str, _str)


def dump_object(obj: Obj) -> str:
    """One object as YAML."""
    return yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


def dump_all(objs: Iterable[Obj]) -> str:
    """Objects as one multi-document YAML stream."""
    return "".join(f"---\n{dump_object(o)}" for o in objs)


def file_name(index: int, obj: Obj) -> str:
    """Stable file name for ``--output-dir``: ``03-job-run-embed.yaml``."""
    kind = re.sub(r"[^a-z0-9]", "", obj["kind"].lower())
    return f"{index:02d}-{kind}-{obj['metadata']['name']}.yaml"


def write_dir(objs: list[Obj], out_dir: Path) -> list[Path]:
    """Write one file per object; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, obj in enumerate(objs):
        path = out_dir / file_name(i, obj)
        path.write_text(dump_object(obj), encoding="utf-8")
        written.append(path)
    return written
