"""The stage commands (``dynamics stage NAME``): module, description and options, light to import.

``dynamics stage NAME --help`` and usage errors are answered from here, before the stage's module (torch,
faiss, open_clip) is imported; each stage's ``main`` parses its arguments with the same parser.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from dynamics import constants as C
from dynamics.constants import Stage


@dataclass(frozen=True)
class StageCommand:
    """One stage command: the module whose ``main(argv)`` runs it, its description, and its options."""

    module: str
    description: str
    indexed: bool = False  # takes --index (an Indexed Job's slice)


STAGE_COMMANDS: dict[str, StageCommand] = {
    "embed": StageCommand("dynamics.stages.embed.main",
                          "Embed one part (a contiguous slice of shards) of the dataset.", indexed=True),
    "cluster-fit": StageCommand("dynamics.stages.cluster_fit",
                                "Fit spherical k-means on a seeded subset of all embeddings, then drop "
                                "centroids too similar to an already kept one."),
    "assign": StageCommand("dynamics.stages.assign",
                           "Assign every embedding of one part to its nearest kept centroid.", indexed=True),
    "scale": StageCommand("dynamics.stages.scale.main",
                          "Turn cluster sizes into per-cluster sampling probabilities and write the per-shard "
                          "tables the trainer reads."),
    "train": StageCommand("dynamics.stages.train.main",
                          "Train the OpenCLIP model through all phases (run under torchrun)."),
    "eval": StageCommand("dynamics.stages.evaluate",
                         "Zero-shot classification of the final checkpoint on the spec's eval sets."),
}


def stage_parser(name: str, description: str | None = None) -> argparse.ArgumentParser:
    """Argument parser of ``dynamics stage NAME``, with the options every stage command takes
    (``description`` replaces the table's, e.g. in tests)."""
    command = STAGE_COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"dynamics stage {name}", description=description or command.description)
    parser.set_defaults(stage=Stage(name))
    parser.add_argument(
        "--spec", default=os.environ.get(C.ENV_SPEC, C.SPEC_MOUNT_PATH),
        help=f"resolved run spec (default: ${C.ENV_SPEC} or {C.SPEC_MOUNT_PATH}, the mounted ConfigMap)",
    )
    if command.indexed:
        parser.add_argument(
            "--index", type=int, default=None,
            help=f"which slice to process (default: ${C.ENV_JOB_INDEX}, set by Indexed Jobs)",
        )
    return parser
