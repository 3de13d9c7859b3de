"""open_clip's model registry, read from its installed config files (no torch import, no network).

``open_clip.list_models()`` would import torch (seconds) just to validate a spec; the registry is the
JSON files in the installed package's ``model_configs/`` directory, so we read those. Where open_clip
is not installed (a machine that only submits), names cannot be checked and are accepted.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from dynamics.spec.similar import close_matches

SCHEMES = ("hf-hub:", "local-dir:")  # open_clip loads these from elsewhere: nothing to check here


def normalise(name: str) -> str:
    """``ViT-L/14`` (OpenAI's spelling) -> ``ViT-L-14`` (open_clip's)."""
    return name if name.startswith(SCHEMES) else name.replace("/", "-")


@lru_cache(maxsize=1)
def _config_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):  # a broken or half-removed install counts as none
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return path if path.is_dir() else None


@lru_cache(maxsize=1)
def model_names() -> tuple[str, ...] | None:
    """Every model name open_clip knows, or None when open_clip is not installed here."""
    root = _config_dir()
    return None if root is None else tuple(sorted(p.stem for p in root.glob("*.json")))


@lru_cache(maxsize=256)
def model_config(name: str) -> dict[str, Any] | None:
    """The registry's config of ``name`` (None when unknown or not checkable)."""
    root = _config_dir()
    if root is None or name not in (model_names() or ()):
        return None
    return json.loads((root / f"{name}.json").read_text(encoding="utf-8"))


def unknown_model(name: str) -> str | None:
    """Why ``name`` is not a model open_clip can create, with the closest names; None when it is (or
    when this machine cannot tell)."""
    names = model_names()
    if names is None or name.startswith(SCHEMES) or name in names:
        return None
    close = close_matches(name, names, n=3)  # case-insensitive: 'vit-b-16' -> 'ViT-B-16'

    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"'{name}' is not an open_clip model{hint}"
