"""The spec's building blocks: the section base model, enums and limits shared by the model and its checks."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes resource quantity (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)
QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
MAX_NAME = 63
POD_SUFFIX = 6  # "-xxxxx": the random suffix the Job controller appends to pod names


class Model(BaseModel):
    """Base for every spec section: camelCase aliases, unknown fields forbidden."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        frozen=True,
    )


Quantity = Annotated[str, Field(pattern=QUANTITY.pattern)]


class Launcher(StrEnum):
    """How the trainer is launched in the cluster."""

    PYTORCHJOB = "pytorchjob"
    INDEXED_JOB = "indexed-job"


class EmbedBackend(StrEnum):
    """Image embedding model families."""

    DINOV2 = "dinov2"
    OPEN_CLIP = "open_clip"
    PIXELS = "pixels"


class Whiten(StrEnum):
    """Transform of the embeddings before clustering (fitted on the k-means sample, stored with the run)."""

    NONE = "none"
    PCA = "pca"


class SampleMode(StrEnum):
    """What a probability p >= 1 means: used once (cap) or repeated (repeat)."""

    CAP = "cap"
    REPEAT = "repeat"


class Precision(StrEnum):
    """Numerical precision of training (open_clip's names)."""

    AMP_BF16 = "amp_bf16"
    AMP = "amp"
    FP32 = "fp32"
    BF16 = "bf16"


class Resources(Model):
    """CPU/memory requests for a stage's pods (GPUs are set by the stage's own gpu fields)."""

    cpu: Quantity = Field("4", description="CPU request and limit, e.g. '8' or '500m'.")
    memory: Quantity = Field("16Gi", description="Memory request and limit, e.g. '64Gi'.")
