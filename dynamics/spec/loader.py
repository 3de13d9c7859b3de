"""Reading, validating and writing run specs, with errors a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dynamics.errors import SpecError
from dynamics.spec.checks import CrossFieldErrors
from dynamics.spec.fixes import fix_for
from dynamics.spec.model import RunSpec
from dynamics.spec.yamlsafe import parse_yaml, read_spec_text


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(spec)"


def _pattern_message(err: dict[str, Any]) -> str:
    return f"{err['input']!r} does not match the required format {err['ctx']['pattern']}"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """All problems of a failed validation, one per line with field path and fix."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, CrossFieldErrors):
            for path, message, fix in ctx_error.problems:
                lines.append(f"  - {path}: {message}\n      fix: {fix}")
            continue
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch":
            message = _pattern_message(err)
        elif err["type"] == "extra_forbidden":
            from dynamics.spec.suggest import did_you_mean  # only for this error: keeps loading light

            message = "unknown field" + (f"; {hint}" if (hint := did_you_mean(tuple(err["loc"]))) else "")
        message = message.removeprefix("Value error, ")
        path = _path(err["loc"])
        lines.append(f"  - {path}: {message}\n      fix: {fix_for(err, path)}")
    count = len(lines)
    return f"{source}: {count} problem{'s' if count != 1 else ''} in the run spec:\n" + "\n".join(lines)


def validate(data: Any, source: str = "spec") -> RunSpec:
    """Validate a parsed spec; every problem is reported at once as a SpecError."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the run spec must be a YAML mapping, got {type(data).__name__}",
                        hint="start from examples/quickstart.yaml")
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from exc


def merge_defaults(defaults: dict[str, Any], data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``data`` with fields it leaves unset taken from ``defaults``; also the dotted paths taken. Pure.

    Mappings merge recursively; anything else the spec sets (lists included) wins whole.
    """
    merged = dict(data)
    taken: list[str] = []
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
            taken.append(key)
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key], sub = merge_defaults(value, merged[key])
            taken += [f"{key}.{path}" for path in sub]
    return merged, taken


def read_spec_data(path: str | Path) -> dict[str, Any]:
    """The spec file parsed but not validated (to merge defaults into it first)."""
    p = Path(path)
    text = read_spec_text(p)  # capped, never blocks
    data = parse_yaml(text, str(p))
    if not isinstance(data, dict):
        raise SpecError(f"{p}: the run spec must be a YAML mapping, got {type(data).__name__}",
                        hint="start from examples/quickstart.yaml")
    return data


def load_spec(path: str | Path) -> RunSpec:
    """Read and validate a spec file (``-`` is not supported; pass a path)."""
    return validate(read_spec_data(path), str(path))


def load_spec_text(text: str, source: str = "spec") -> RunSpec:
    """Validate a spec given as YAML text (e.g. from the run ConfigMap)."""
    return validate(parse_yaml(text, source), source)


def resolved_dict(spec: RunSpec) -> dict[str, Any]:
    """The spec with every default filled in, as plain JSON-compatible data."""
    return json.loads(spec.model_dump_json(by_alias=True))


def dump_spec(spec: RunSpec) -> str:
    """The resolved spec as YAML (what the run ConfigMap and the work directory hold)."""
    return yaml.safe_dump(resolved_dict(spec), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON schema of the run spec (for editors and the Helm chart)."""
    schema = RunSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "DynamicsRun"
    return schema
