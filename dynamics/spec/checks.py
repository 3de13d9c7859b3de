"""Cross-field checks of a RunSpec: each problem carries its field path and a fix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dynamics import constants as C
from dynamics.spec import names, reduced, registry
from dynamics.spec.types import MAX_NAME, EmbedBackend, Launcher
from dynamics.storage import layout
from dynamics.storage.config import S3_SCHEME

if TYPE_CHECKING:
    from dynamics.spec.model import RunSpec


class Problem(tuple[str, str, str]):
    """(field path, what is wrong, how to fix it)."""

    __slots__ = ()

    def __new__(cls, path: str, message: str, fix: str) -> Problem:
        return super().__new__(cls, (path, message, fix))


class CrossFieldErrors(ValueError):
    """Several spec problems found together; pydantic keeps it as the error's context."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p[0]}: {p[1]}" for p in problems))
        self.problems = problems


def embed_parts(spec: RunSpec) -> int:
    """Embed parts = embed Indexed-Job completions."""
    return layout.n_parts(spec.n_shards, spec.embed.shards_per_part)


def _name_length(spec: RunSpec) -> list[Problem]:
    parts = embed_parts(spec)
    tails = names.pod_name_suffixes(spec.name, parts, parts, spec.train.nodes)
    longest = max(tails, key=len)
    limit = MAX_NAME - len(longest)
    if len(spec.name) > limit:
        shown = spec.name if len(spec.name) <= 2 * MAX_NAME else spec.name[:MAX_NAME] + "..."
        return [Problem("name", f"'{shown}' is {len(spec.name):,} characters; pod names such as "
                        f"'{shown}{longest}' would exceed {MAX_NAME}",
                        f"use a name of at most {limit} characters")]
    if not spec.name[0].isalpha():
        return [Problem("name", "must start with a letter (Service names are DNS-1035 labels)",
                        f"e.g. 'run-{spec.name}'")]
    return []


def _resolution(spec: RunSpec) -> list[Problem]:
    patch = spec.train.patch_size()
    out = []
    if patch is None:
        return out
    for i, phase in enumerate(spec.train.phases):
        if phase.resolution % patch:
            lower = phase.resolution // patch * patch
            out.append(Problem(f"train.phases[{i}].resolution",
                               f"{phase.resolution} is not divisible by the patch size {patch} of the model",
                               f"use {lower or patch} or {lower + patch}"))
    return out


def _model(spec: RunSpec) -> list[Problem]:
    if spec.train.model_config_ is not None:
        return []
    problem = registry.unknown_model(spec.train.model)
    if problem is None:
        return []
    return [Problem("train.model", problem, "use a name from `python -c 'import open_clip; "
                    "print(open_clip.list_models())'`, or give train.modelConfig")]


def _shards_vs_readers(spec: RunSpec) -> list[Problem]:
    t = spec.train
    readers = t.nodes * t.procs * max(t.workers, 1)
    if spec.n_shards < readers:
        return [Problem("data.shards", f"{spec.n_shards} shards cannot feed {readers} readers "
                        f"(train.nodes {t.nodes} x processes {t.procs} x workers {max(t.workers, 1)})",
                        "lower train.workers or train.nodes, or split the data into more shards")]
    return []


def _launcher(spec: RunSpec) -> list[Problem]:
    t = spec.train
    out = []
    if t.launcher is Launcher.PYTORCHJOB and t.gpus_per_node == 0 and t.procs_per_node is None:
        out.append(Problem("train.procsPerNode", "a CPU run (gpusPerNode 0) needs procsPerNode",
                           "set train.procsPerNode, e.g. 2"))
    if t.gpus_per_node and t.procs_per_node not in (None, t.gpus_per_node):
        out.append(Problem("train.procsPerNode", "with GPUs there is one process per GPU",
                           "remove train.procsPerNode"))
    return out


def _embed(spec: RunSpec) -> list[Problem]:
    e = spec.embed
    if e.backend is EmbedBackend.PIXELS and e.gpus_per_pod:
        return [Problem("embed.gpusPerPod", "the pixels backend runs on CPU", "set embed.gpusPerPod: 0")]
    # open_clip embed models are 'name' or 'name:pretrained' (a tag or a checkpoint path).
    # run:RUN names a finished run's model (dynamics.stages.embed.modelref), checked when the stage loads it.
    name = e.model if e.model.startswith(registry.SCHEMES) else e.model.partition(":")[0]
    check = e.backend is EmbedBackend.OPEN_CLIP and not e.model.startswith("run:")
    problem = registry.unknown_model(name) if check else None
    if problem:
        return [Problem("embed.model", problem, "use an open_clip model name")]
    return []


def _reduced_side(spec: RunSpec) -> list[Problem]:
    # Copies smaller than phase 1's crops need would upsample them (dynamics/spec/reduced.py's rule).
    e, first = spec.embed, spec.train.phases[0]
    if not e.reduced_shards or e.reduced_short_side is None:
        return []
    need = reduced.required_short_side(first.resolution, spec.train.augmentation.scale[0])
    if e.reduced_short_side >= reduced.faithful_short_side(first.resolution, spec.train.augmentation.scale[0]):
        return []
    return [Problem("embed.reducedShortSide", f"{e.reduced_short_side} px copies would upsample phase 1's "
                    f"{first.resolution} px crops at train.augmentation.scale {list(spec.train.augmentation.scale)}",
                    f"set it to at least {need}, or leave it unset (default {need})")]


def _cluster(spec: RunSpec) -> list[Problem]:
    c = spec.cluster
    out = []
    if c.k > spec.data.approx_samples:
        out.append(Problem("cluster.k", f"k={c.k} exceeds data.approxSamples={spec.data.approx_samples}",
                           "lower cluster.k"))
    if c.train_samples < c.k:
        out.append(Problem("cluster.trainSamples", f"{c.train_samples} training points for k={c.k} "
                           "centroids", "use at least k (FAISS recommends 39 x k or more)"))
    return out


def _phases(spec: RunSpec) -> list[Problem]:
    out = []
    for i, phase in enumerate(spec.train.phases):
        if phase.warmup and phase.samples // (phase.batch_per_gpu * spec.train.nodes * spec.train.procs) \
                < phase.warmup:
            out.append(Problem(f"train.phases[{i}].warmup",
                               f"{phase.warmup} warm-up steps exceed the phase's total steps",
                               "lower warmup or raise samples"))
    return out


# Environment variable names that hold credentials, and credentials recognisable inside any string.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|PRIVATE_KEY|API_KEY|CREDENTIAL", re.I)
# Anchored at "://" (a scheme character before it), not at the scheme's first letter: a leading
# `[a-z][a-z0-9+.-]*` is tried from every letter of a long word, which is quadratic in its length.
# From "://" each try stops at the next "/", which the next "://" contains, so the scan is linear.
_URL_USERINFO = re.compile(r"(?<=[a-z0-9+.-])://[^/@\s:]+:[^/@\s]+@", re.I)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_USE_A_SECRET = ("remove it and keep credentials in a Secret: `kubectl create secret generic s3-creds "
                 "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...`, then set "
                 "storage.credentialsSecret: s3-creds")

_ENV_FROM_SECRET = ("keep it in a Secret and reference it: `kubectl create secret generic mysecret "
                    "--from-literal=value=...`, then `- name: {0}` with `valueFrom: {{secretKeyRef: {{name: mysecret, "
                    "key: value}}}}` (S3 keys: storage.credentialsSecret)")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _strings(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            yield from _strings(sub, f"{path}[{i}]")


def _credentials(spec: RunSpec) -> list[Problem]:
    """Literal credentials would be rendered in plain text into the run ConfigMap and every pod."""
    out = [Problem(f"kubernetes.env[{i}]", f"{e.name} looks like a credential given as a literal value "
                   "(it would be readable in the run's ConfigMap and every pod)", _ENV_FROM_SECRET.format(e.name))
           for i, e in enumerate(spec.kubernetes.env) if e.value is not None and _SECRET_NAME.search(e.name)]
    for path, text in _strings(spec.model_dump(mode="json", by_alias=True), ""):
        if _URL_USERINFO.search(text):
            out.append(Problem(path, "contains a user name and password in a URL", _USE_A_SECRET))
        elif _AWS_KEY_ID.search(text):
            out.append(Problem(path, "contains an AWS access key id", _USE_A_SECRET))
    return out


def _train_options(spec: RunSpec) -> list[Problem]:
    t = spec.train
    out = []
    if t.eval_every is not None and spec.eval is None:
        out.append(Problem("train.evalEvery", "in-training eval needs the spec's eval sets",
                           "add an eval section, or remove train.evalEvery"))
    if t.strategy == "fsdp" and t.precision.value == "amp":
        out.append(Problem("train.precision", "fp16 AMP's gradient scaler is not set up for sharded gradients",
                           "use precision amp_bf16 (the recipe's) with strategy fsdp"))
    for i, phase in enumerate(t.phases):
        if phase.batch_per_gpu % t.accum_freq:
            out.append(Problem(f"train.phases[{i}].batchPerGpu", f"{phase.batch_per_gpu} is not a multiple "
                               f"of train.accumFreq {t.accum_freq}", "make accumFreq divide every batchPerGpu"))
    return out


def _rdma(spec: RunSpec) -> list[Problem]:
    """An RDMA device on the published trainer image does nothing: it has no rdma-core (libibverbs), so
    NCCL finds no IB transport and silently trains over TCP sockets while holding the HCA."""
    rdma = sorted(k for k in spec.train.extra_resources if k.split("/")[0].startswith("rdma"))
    if not rdma or not spec.images.trainer.startswith(f"{C.DEFAULT_IMAGE_REGISTRY}/dynamics-trainer:"):
        return []
    return [Problem("train.extraResources", f"{', '.join(rdma)} needs a trainer image with rdma-core "
                    "(libibverbs); the published image has none, so NCCL would use TCP sockets",
                    "build images.trainer FROM the published one with rdma-core installed, and run in a "
                    "namespace whose Pod Security allows what your RDMA plugin needs (IPC_LOCK or an unlimited "
                    "memlock: 'baseline', not 'restricted'); or remove extraResources and train over TCP "
                    "(NCCL sockets; set NCCL_SOCKET_IFNAME in kubernetes.env)")]


# A mistyped scheme is still a valid local path: `s3:/bucket/runs` would silently become a directory
# named 's3:' on the local disk, or in a pod's ephemeral filesystem where every result is lost.
_S3_TYPO = re.compile(r"^s3(?::/*|//+)(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)


def s3_typo(value: str) -> str | None:
    """The intended ``s3://`` URI when ``value`` is a mistyped one (``s3:/b``, ``s3//b``, ``S3://b``,
    ``s3:///b``), else None. Pure."""
    if value.startswith(S3_SCHEME) and not value.startswith(S3_SCHEME + "/"):
        return None
    match = _S3_TYPO.match(value)
    return S3_SCHEME + match["rest"] if match else None


def storage_uris(spec: RunSpec) -> Iterator[tuple[str, str]]:
    """(field path, value) of every spec field that names a file or prefix the stages read or write."""
    yield "storage.workdir", spec.storage.workdir
    yield "data.shards", spec.data.shards
    for i, ds in enumerate(spec.eval.datasets if spec.eval else []):
        yield f"eval.datasets[{i}].shards", ds.shards
        if isinstance(ds.classnames, str) and ds.classnames != "imagenet":
            yield f"eval.datasets[{i}].classnames", ds.classnames
        if ds.class_counts:
            yield f"eval.datasets[{i}].classCounts", ds.class_counts
    if spec.train.pretrained:
        yield "train.pretrained", spec.train.pretrained
    if spec.train.resume_from and spec.train.resume_from != "latest":
        yield "train.resumeFrom", spec.train.resume_from


def _s3_typos(spec: RunSpec) -> list[Problem]:
    uris = [*storage_uris(spec)]
    if spec.embed.backend is EmbedBackend.DINOV2:
        uris.append(("embed.model", spec.embed.model))
    return [Problem(path, f"'{value}' is not an S3 URI (S3 URIs are written s3://BUCKET/PREFIX, lower case, "
                    "two slashes) and would be taken as a local path", f"write it as '{fixed}'")
            for path, value in uris if (fixed := s3_typo(value)) is not None]


def cluster_storage_problems(spec: RunSpec) -> list[Problem]:
    """Local paths a cluster run cannot use: every stage pod has only its own ephemeral filesystem, so a
    local work directory loses every result and local inputs do not exist there. Pure."""
    return [Problem(path, f"'{value}' is a local path: a cluster run's pods cannot reach it (each writes "
                    "into its own ephemeral filesystem, and the results are lost with the pod)",
                    "use s3://BUCKET/PREFIX (storage.endpoint for MinIO/Ceph/R2), or run here with --local")
            for path, value in storage_uris(spec) if not value.startswith(S3_SCHEME)]


def cross_check(spec: RunSpec) -> None:
    """Raise :class:`CrossFieldErrors` listing every cross-field problem of ``spec``."""
    problems = [
        *_name_length(spec), *_model(spec), *_resolution(spec), *_shards_vs_readers(spec), *_launcher(spec),
        *_embed(spec), *_reduced_side(spec), *_cluster(spec), *_phases(spec), *_train_options(spec),
        *_credentials(spec), *_rdma(spec), *_s3_typos(spec),
    ]
    if problems:
        raise CrossFieldErrors(problems)
