"""Where every artifact of a run lives under its work directory (documented in README).

Pure string arithmetic: works the same for ``s3://bucket/prefix`` and local paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamics import constants as C
from dynamics.constants import Stage


def join(base: str, *parts: str) -> str:
    """Join URI or path components with single slashes (``s3://b/x`` + ``y`` -> ``s3://b/x/y``)."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def part_name(index: int) -> str:
    """Name of embed/assign part ``index`` (``part-00007``)."""
    return f"part-{index:05d}"


@dataclass(frozen=True)
class RunPaths:
    """All artifact locations of one run, rooted at ``<workdir>/<run>``.

    ``embed_root`` and ``cluster_root`` (embed; cluster-fit and assign) default to ``root``; runs built
    with :func:`dynamics.spec.fingerprint.run_paths` address them by fingerprint under
    ``<workdir>/_shared/`` so that runs with equal embed/cluster settings share them.
    """

    root: str
    embed_root: str = ""
    cluster_root: str = ""

    @classmethod
    def for_run(cls, workdir: str, run: str) -> RunPaths:
        """Paths for run ``run`` under work directory ``workdir``."""
        return cls(join(workdir, run))

    def _p(self, *parts: str) -> str:
        return join(self.root, *parts)

    def _e(self, *parts: str) -> str:
        return join(self.embed_root or self.root, *parts)

    def _c(self, *parts: str) -> str:
        return join(self.cluster_root or self.root, *parts)

    # resolved spec
    @property
    def spec(self) -> str:
        return self._p(C.RESOLVED_SPEC)

    # embed stage: one part per Indexed-Job completion index
    def embed_dir(self) -> str:
        return self._e(C.DIR_EMBED)

    def embed_vectors(self, part: int) -> str:
        return self._e(C.DIR_EMBED, f"{part_name(part)}.npy")

    def embed_keys(self, part: int) -> str:
        return self._e(C.DIR_EMBED, f"{part_name(part)}.keys.parquet")

    def embed_stats(self, part: int) -> str:
        return self._e(C.DIR_EMBED, f"{part_name(part)}.stats.json")

    def reduced_shard(self, shard_index: int) -> str:
        """Reduced-resolution copy of shard ``shard_index`` (embed.reducedShards)."""
        return self._e(C.DIR_REDUCED_SHARDS, f"{shard_index:08d}.tar")

    def embed_marker(self, part: int) -> str:
        return self._e(C.DIR_EMBED, f"{part_name(part)}{C.MARKER_SUFFIX}")

    # cluster-fit
    def cluster_dir(self) -> str:
        return self._c(C.DIR_CLUSTER)

    @property
    def centroids(self) -> str:
        return self._c(C.DIR_CLUSTER, "centroids.npy")

    @property
    def kept(self) -> str:
        return self._c(C.DIR_CLUSTER, "kept.npy")

    @property
    def kept_index(self) -> str:
        """Original centroid ids of the kept centroids (kept.npy row i is centroids.npy row kept_index[i])."""
        return self._c(C.DIR_CLUSTER, "kept_index.npy")

    @property
    def whitening(self) -> str:
        """cluster.whiten=pca: the fitted transform (column 0 the mean, then the projection)."""
        return self._c(C.DIR_CLUSTER, "whitening.npy")

    @property
    def fit_json(self) -> str:
        return self._c(C.DIR_CLUSTER, "fit.json")

    @property
    def cluster_marker(self) -> str:
        return self._c(C.DIR_CLUSTER, f"fit{C.MARKER_SUFFIX}")

    # assign: aligned with embed parts
    def assign_labels(self, part: int) -> str:
        return self._c(C.DIR_ASSIGN, f"{part_name(part)}.npy")

    def assign_counts(self, part: int) -> str:
        return self._c(C.DIR_ASSIGN, f"{part_name(part)}.counts.npy")

    def assign_marker(self, part: int) -> str:
        return self._c(C.DIR_ASSIGN, f"{part_name(part)}{C.MARKER_SUFFIX}")

    # scale
    @property
    def sizes(self) -> str:
        return self._p(C.DIR_SAMPLE, "sizes.npy")

    @property
    def probs(self) -> str:
        return self._p(C.DIR_SAMPLE, "probs.npy")

    @property
    def report(self) -> str:
        return self._p(C.DIR_SAMPLE, "report.json")

    @property
    def plot(self) -> str:
        return self._p(C.DIR_SAMPLE, "cluster_sizes.png")

    def shard_table(self, shard_index: int) -> str:
        """Per-shard lookup table the trainer loads lazily (keys and their cluster/probability)."""
        return self._p(C.DIR_SAMPLE_TABLES, f"{shard_index:08d}.npz")

    @property
    def scale_marker(self) -> str:
        return self._p(C.DIR_SAMPLE, f"scale{C.MARKER_SUFFIX}")

    # train
    def checkpoints_dir(self) -> str:
        return self._p(C.DIR_CHECKPOINTS)

    @property
    def model_config(self) -> str:
        """open_clip config of the final model, beside the checkpoints (see ``dynamics export-model``)."""
        return self._p(C.DIR_CHECKPOINTS, C.OPEN_CLIP_CONFIG)

    def tensorboard_dir(self) -> str:
        return self._p(C.DIR_TENSORBOARD)

    @property
    def train_marker(self) -> str:
        return self._p(C.DIR_TRAIN, f"train{C.MARKER_SUFFIX}")

    # eval
    @property
    def eval_results(self) -> str:
        return self._p(C.DIR_EVAL, "results.json")

    @property
    def eval_marker(self) -> str:
        return self._p(C.DIR_EVAL, f"eval{C.MARKER_SUFFIX}")


def shard_slice(n_shards: int, shards_per_part: int, part: int) -> range:
    """Shard indices handled by embed part ``part`` (contiguous, deterministic)."""
    start = part * shards_per_part
    return range(start, min(start + shards_per_part, n_shards))


def n_parts(n_shards: int, shards_per_part: int) -> int:
    """Number of embed parts (= embed Indexed-Job completions) covering ``n_shards``."""
    return -(-n_shards // shards_per_part)


def shared_folder(paths: RunPaths, stage: Stage) -> str | None:
    """The shared folder ``stage`` writes into, or None for a stage of the run's own (pure)."""
    if stage is Stage.EMBED:
        return paths.embed_root or None
    if stage in (Stage.CLUSTER_FIT, Stage.ASSIGN):
        return paths.cluster_root or None
    return None
