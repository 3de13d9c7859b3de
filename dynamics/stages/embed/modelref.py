"""Which model the open_clip embed backend loads: the name forms of ``embed.model``. Light (no torch).

``embed.model`` for ``backend: open_clip`` takes every form open_clip 3.3's ``create_model`` takes, and one
of ours:

- ``hf-hub:ORG/REPO``: config and weights from the Hugging Face Hub (or its local cache when offline);
- ``local-dir:DIR``: a folder with ``open_clip_config.json`` and weights, e.g. what
  ``dynamics export-model`` writes (``DIR`` may also be ``s3://...``: downloaded once);
- ``NAME`` or ``NAME:TAG`` or ``NAME:/path/to/checkpoint``: a built-in architecture, with an optional
  pretrained tag or weights file (open_clip's ``pretrained=`` argument);
- ``run:RUN`` or ``run:RUN@FINGERPRINT``: the final model of the finished run ``RUN`` in this spec's
  work directory (the bootstrap recipe: embed with the image tower of a short uniform pass).

The embed stage's fingerprint covers the ``embed.model`` string. For ``run:RUN`` that string alone does
not say which weights were used, so ``dynamics-submit --local`` pins it before anything runs: it appends
the source run's train-stage fingerprint (``run:RUN@<16 hex>``), so retraining ``RUN`` with another spec
changes the embed fingerprint, and a pinned reference to a run that was since replaced is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.model import EmbedBackend

if TYPE_CHECKING:
    from dynamics.spec.model import RunSpec
    from dynamics.storage.objects import StorageConfig

HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"
RUN = "run:"
PIN_SEP = "@"
PIN_DIGITS = 16  # as the fingerprints in artifact directory names (dynamics.spec.fingerprint.SHORT)

RefKind = Literal["hf-hub", "local-dir", "builtin", "run"]
NAME_FORMS = "hf-hub:ORG/REPO, local-dir:DIR, NAME[:TAG or :CHECKPOINT], run:RUN[@FINGERPRINT]"


@dataclass(frozen=True)
class ModelRef:
    """One parsed ``embed.model``: ``name`` is what open_clip gets (or the run name for ``run``)."""

    kind: RefKind
    name: str
    pretrained: str | None = None  # builtin only: a tag or a weights file
    pin: str | None = None  # run only: a prefix of the source run's train-stage fingerprint


def _bad(ref: str, why: str) -> DynamicsError:
    return DynamicsError(f"embed.model '{ref}' {why}", hint=f"use one of {NAME_FORMS}", exit_code=2)


def parse_model_ref(ref: str) -> ModelRef:
    """``embed.model`` (open_clip backend) as a :class:`ModelRef`; schema prefixes are matched as in
    open_clip's ``parse_model_name`` (the whole rest is the identifier, colons included)."""
    for prefix, kind in ((HF_HUB, "hf-hub"), (LOCAL_DIR, "local-dir")):
        if ref.startswith(prefix):
            rest = ref[len(prefix):]
            if not rest:
                raise _bad(ref, f"names nothing after '{prefix}'")
            return ModelRef(kind, ref if kind == "hf-hub" else rest)
    if ref.startswith(RUN):
        run, sep, pin = ref[len(RUN):].partition(PIN_SEP)
        if not run or "/" in run:
            raise _bad(ref, "does not name a run")
        if sep and (len(pin) < 8 or any(c not in "0123456789abcdef" for c in pin)):
            raise _bad(ref, "has a pin that is not 8+ lower-case hex digits of the run's fingerprint")
        return ModelRef("run", run, pin=pin or None)
    name, _, pretrained = ref.partition(":")
    if not name:
        raise _bad(ref, "has no model name")
    return ModelRef("builtin", name, pretrained=pretrained or None)


def pinned(ref: ModelRef, train_fingerprint: str) -> str:
    """The ``run:RUN@FP`` form of a run reference, pinned to the source run's train fingerprint."""
    return f"{RUN}{ref.name}{PIN_SEP}{train_fingerprint[:PIN_DIGITS]}"


def check_pin(ref: ModelRef, train_fingerprint: str) -> None:
    """Refuse a pinned run reference whose run has since been trained from another spec."""
    if ref.pin is not None and not train_fingerprint.startswith(ref.pin):
        raise DynamicsError(
            f"embed.model pins run '{ref.name}' at fingerprint {ref.pin}, but that run's model now has "
            f"{train_fingerprint[:PIN_DIGITS]} (it was retrained from another spec)",
            hint=f"set embed.model to run:{ref.name} to use its current model, or restore that run",
            exit_code=2)


def source_spec(workdir: str, run: str, cfg: StorageConfig | None) -> RunSpec:
    """The resolved spec the finished run ``run`` left in ``workdir``."""
    from dynamics.spec.loader import load_spec_text
    from dynamics.storage import objects as storage
    from dynamics.storage.layout import RunPaths

    uri = RunPaths.for_run(workdir, run).spec
    if not storage.exists(uri, cfg):
        raise DynamicsError(f"embed.model names run '{run}', but there is no such run under {workdir} "
                            f"({uri} does not exist)",
                            hint="run that spec first (same storage.workdir), or correct the name", exit_code=2)
    return load_spec_text(storage.read_bytes(uri, cfg).decode("utf-8"), uri)


def pin_run_model(spec: RunSpec, cfg: StorageConfig | None) -> RunSpec:
    """``spec`` with an unpinned ``embed.model: run:RUN`` pinned to that run's train fingerprint (so the
    embed fingerprint, and everything downstream, names the weights); any other spec unchanged."""
    from dynamics.spec.fingerprint import stage_fingerprint

    if spec.embed.backend is not EmbedBackend.OPEN_CLIP or not spec.embed.model.startswith(RUN):
        return spec
    ref = parse_model_ref(spec.embed.model)
    train_fp = stage_fingerprint(source_spec(spec.storage.workdir, ref.name, cfg), Stage.TRAIN)
    check_pin(ref, train_fp)
    embed = spec.embed.model_copy(update={"model": pinned(ref, train_fp)})
    return spec.model_copy(update={"embed": embed})
