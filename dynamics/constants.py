"""Names shared by the renderer, the controller, the chart and the stages.

One module holds every label key, object-name suffix, environment variable and path so that the
Helm chart's ``_helpers.tpl``, the controller's selectors and ``kubectl -l`` agree.
"""

from __future__ import annotations

from enum import StrEnum

APP_NAME = "dynamics"
API_GROUP = "dynamics.io"

# --- labels (on every object; the chart's _helpers.tpl uses the same keys) ---
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_RUN = f"{API_GROUP}/run"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
# Stage objects written by `--output-dir --with-stages`: suspended, for review only.
LABEL_REVIEW = f"{API_GROUP}/review"
REVIEW_SUSPENDED = "suspended"
# Trainer pods (kubernetes.protectTrainers): Karpenter and the cluster autoscaler leave their nodes alone.
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
ANNOTATION_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
MANAGED_BY = "dynamics"

# --- annotations ---
ANNOTATION_SPEC_HASH = f"{API_GROUP}/spec-sha256"


class Stage(StrEnum):
    """Pipeline stages, in the order the controller runs them."""

    EMBED = "embed"
    CLUSTER_FIT = "cluster-fit"
    ASSIGN = "assign"
    SCALE = "scale"
    TRAIN = "train"
    EVAL = "eval"


PIPELINE: tuple[Stage, ...] = (
    Stage.EMBED,
    Stage.CLUSTER_FIT,
    Stage.ASSIGN,
    Stage.SCALE,
    Stage.TRAIN,
    Stage.EVAL,
)

COMPONENT_CONTROLLER = "controller"
COMPONENT_RUN = "run"

# Object names are "<run>-<suffix>"; the longest generated pod name decides the run-name limit.
SUFFIX_CONFIG = "run"
SUFFIX_CONTROLLER = "controller"
SUFFIX_TRAIN_SERVICE = "train"

# --- the run ConfigMap ---
CONFIG_SPEC_KEY = "spec.yaml"
CONFIG_STATUS_KEY = "status.json"
SPEC_MOUNT_DIR = "/etc/dynamics"
SPEC_MOUNT_PATH = f"{SPEC_MOUNT_DIR}/{CONFIG_SPEC_KEY}"

# --- environment ---
ENV_JOB_INDEX = "JOB_COMPLETION_INDEX"
ENV_SPEC = "DYNAMICS_SPEC"
# The stage fingerprint a stage pod was created for: the mounted spec must still give it (see stages/common).
ENV_STAGE_FINGERPRINT = "DYNAMICS_STAGE_FINGERPRINT"
ENV_RUN = "DYNAMICS_RUN"
ENV_NAMESPACE = "DYNAMICS_NAMESPACE"
ENV_AWS_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_AWS_REGION = "AWS_DEFAULT_REGION"
ENV_AWS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET = "AWS_SECRET_ACCESS_KEY"
ENV_AWS_SESSION = "AWS_SESSION_TOKEN"

# Keys looked up in a user's credentials Secret (the same names the AWS CLI uses).
SECRET_KEY_ID = ENV_AWS_KEY_ID
SECRET_ACCESS_KEY = ENV_AWS_SECRET

# --- work directory layout (documented in the README) ---
DIR_EMBED = "embed"
DIR_CLUSTER = "cluster"
DIR_ASSIGN = "cluster/assign"
DIR_SAMPLE = "sample"
DIR_SAMPLE_TABLES = "sample/shards"
DIR_REDUCED_SHARDS = "embed/reduced"
DIR_TRAIN = "train"
DIR_CHECKPOINTS = "train/checkpoints"
DIR_TENSORBOARD = "train/tensorboard"
DIR_EVAL = "eval"
RESOLVED_SPEC = "spec.yaml"
# Fingerprint-addressed embed/cluster artifacts shared by runs; '_' keeps it apart from any run name.
DIR_SHARED = "_shared"
MARKER_SUFFIX = ".done"
OPEN_CLIP_CONFIG = "open_clip_config.json"  # open_clip's name: `local-dir:` loading reads it
MARKER_FINGERPRINT = "fingerprint"  # marker payload key: the stage fingerprint of the spec it was made for
STAGE_MARKER = "_SUCCESS"

# --- defaults ---
KUBERNETES_VERSION = "1.35"
# Kubernetes minors every rendered object is validated against (README: supported versions).
SUPPORTED_KUBERNETES: tuple[str, ...] = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35")
DEFAULT_IMAGE_REGISTRY = "ghcr.io/dynamics-dev"
DEFAULT_IMAGE_TAG = "0.1.0"
PYTORCH_CONTAINER = "pytorch"
TRAIN_PORT = 29500

# --- namespace defaults (written by the Helm chart's namespace install, read by dynamics-submit) ---
DEFAULTS_CONFIG_MAP = "dynamics-defaults"
DEFAULTS_KEY = "defaults.yaml"

# --output-dir --with-stages: stage objects for review only, where `kubectl apply -f DIR` (even -R),
# Argo CD and Flux do not pick them up (they read *.yaml, *.yml and *.json).
REVIEW_DIR = "review-only"
REVIEW_SUFFIX = ".review"

# --- GPU drivers (dynamics doctor) ---
# The images' torch is built for CUDA 13, which runs on NVIDIA driver branch 580 or newer
# (https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html, table 1).
IMAGE_CUDA = "13"
MIN_NVIDIA_DRIVER = 580
# Node labels of NVIDIA GPU feature discovery (GPU operator / device plugin), NVIDIA/k8s-device-plugin
# internal/lm/nvml.go newVersionLabeler: the new names, then the deprecated ones it still writes.
LABEL_DRIVER_FULL = "nvidia.com/cuda.driver-version.full"  # e.g. "580.65.06"
LABEL_DRIVER_MAJOR = "nvidia.com/cuda.driver-version.major"
LABEL_DRIVER_MAJOR_OLD = "nvidia.com/cuda.driver.major"
LABEL_DRIVER_MINOR_OLD = "nvidia.com/cuda.driver.minor"
LABEL_DRIVER_REV_OLD = "nvidia.com/cuda.driver.rev"
