"""Shared stages of a local run: claimed, not raced (see :mod:`dynamics.storage.claims`).

Sweep points with equal embed/cluster settings share ``<workdir>/_shared/<stage>-<fp>/``. The first run
to need such a stage claims its folder and computes it; the others say so and wait for its markers; a
run whose claimant died takes the claim over once it is stale. The owner removes temporaries killed
writes left under the folder: with the claim held, nothing else writes there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dynamics.constants import Stage
from dynamics.spec.model import RunSpec
from dynamics.stages.progress import stage_complete
from dynamics.storage import claims
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths, shared_folder

CLAIM_POLL_SECONDS = 1.0  # how often a waiting run looks again


@dataclass
class SharedStage:
    """One shared stage of this run, and the claim on its folder while this run computes it."""

    stage: Stage
    folder: str
    owner: str
    cfg: storage.StorageConfig | None
    claim: claims.Claim | None = None

    @classmethod
    def of(cls, paths: RunPaths, stage: Stage, cfg: storage.StorageConfig | None, run_id: str) -> SharedStage | None:
        """The shared stage, or None when ``stage`` writes only into the run's own folder."""
        folder = shared_folder(paths, stage)
        return cls(stage, folder, claims.new_owner(run_id), cfg) if folder else None

    def claim_or_wait(self, spec: RunSpec, paths: RunPaths, say: Callable[[str], None]) -> bool:
        """Claim the folder (True: compute the stage) or wait until another run completed it (False)."""
        waiting = False
        while True:
            if stage_complete(spec, paths, self.stage, self.cfg):
                return False
            self.claim = claims.try_claim(self.folder, self.owner, self.cfg)
            if self.claim is not None:
                if stage_complete(spec, paths, self.stage, self.cfg):  # finished just before our claim
                    self.release()
                    return False
                storage.remove_stale_temps(self.folder, self.cfg)
                return True
            if not waiting:
                held = claims.read_claim(self.folder, self.cfg)
                who = claims.owner_label(held.owner) if held else "another run"
                say(f"- {self.stage.value}: being computed by another run ({who}) into {self.folder}; "
                    "waiting for its markers")
                waiting = True
            time.sleep(CLAIM_POLL_SECONDS)

    def heartbeat(self) -> None:
        """Renew the claim when due; raises :class:`claims.ClaimLost` when it was taken over."""
        if self.claim is not None and time.time() - self.claim.heartbeat >= claims.RENEW_S:
            self.claim = claims.renew(self.claim, self.cfg)

    def release(self) -> None:
        """Give the claim up (the stage is complete, or failed and another run may try)."""
        if self.claim is not None:
            claims.release(self.claim, self.cfg)
            self.claim = None
