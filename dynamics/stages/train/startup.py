"""What every trainer process does before its first step: seed its RNGs, clear killed writes' leftovers."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from dynamics.stages.train.loop import Dist
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.objects import StorageConfig

log = logging.getLogger("dynamics.train")


def seed_everything(seed: int, rank: int) -> None:
    """Seed every RNG the trainer touches from the spec's seed and this process's rank.

    The default torch generator feeds the DataLoader's base seed and lands in checkpoints'
    ``rng_state``; unseeded, two runs of one spec differ there. Items' augmentations are seeded
    per item (see ``data.augmentation_seed``), so this does not change what a step sees.
    """
    mixed = int(np.random.SeedSequence([seed, rank, 0x7E5D]).generate_state(1)[0])
    torch.manual_seed(mixed)
    random.seed(mixed)
    np.random.seed(mixed)


def start_process(seed: int, d: Dist, paths: RunPaths, cfg: StorageConfig | None) -> None:
    """Seed this process; on rank 0 also remove checkpoint temporaries a killed write left behind.

    Only rank 0 writes checkpoints and the stage's lease (one trainer per run) means no other
    writer is active, so any temporary found now is stale.
    """
    seed_everything(seed, d.rank)
    if d.main:
        for path in storage.remove_stale_temps(paths.checkpoints_dir(), cfg):
            log.info("removed %s, left by an interrupted checkpoint write", path)
