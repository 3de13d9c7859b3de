"""Step arithmetic of a training run: phases, epochs and sampler epochs (pure, no I/O).

A phase of ``samples`` samples at global batch ``G`` runs ``ceil(samples / G)`` optimizer steps. An
"epoch" is ``samples_per_epoch(phase)`` samples, i.e. ``ceil(samples_per_epoch / G)`` steps (rounded
up like the phase, so 6 x 213.33M samples make 6 epochs); the last epoch of a phase may be shorter.
Every epoch re-draws the DynamiCS subset: its *sampler epoch* is a run-wide counter, so phase 2 does
not replay phase 1's subsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dynamics.spec.model import RunSpec

# A reader that exhausts its shards within one epoch starts another pass over them; pass p > 0 of
# sampler epoch g draws with epoch number g + p * PASS_STRIDE, which no plain epoch ever reaches.
PASS_STRIDE = 1 << 32


@dataclass(frozen=True)
class PhasePlan:
    """One phase as the trainer runs it on a given world size."""

    index: int
    name: str
    resolution: int
    batch_per_rank: int
    world_size: int
    steps: int
    steps_per_epoch: int
    first_sampler_epoch: int
    lr: float
    warmup: int
    requested_samples: int

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all ranks."""
        return self.batch_per_rank * self.world_size

    @property
    def samples(self) -> int:
        """Samples this phase actually trains on (steps x global batch)."""
        return self.steps * self.global_batch

    @property
    def epochs(self) -> int:
        """Epochs in this phase (the last one may be partial)."""
        return -(-self.steps // self.steps_per_epoch)

    def epoch_of(self, step: int) -> int:
        """Epoch (within the phase) that step ``step`` (0-based, not yet run) belongs to."""
        return step // self.steps_per_epoch

    def epoch_steps(self, epoch: int) -> range:
        """Phase steps of epoch ``epoch`` (0-based, within the phase)."""
        start = epoch * self.steps_per_epoch
        return range(start, min(start + self.steps_per_epoch, self.steps))

    def sampler_epoch(self, epoch: int) -> int:
        """Run-wide sampler epoch of this phase's epoch ``epoch``."""
        return self.first_sampler_epoch + epoch


def sampler_epoch_of_pass(sampler_epoch: int, pass_index: int) -> int:
    """Epoch number handed to the sampler for pass ``pass_index`` of ``sampler_epoch``."""
    return sampler_epoch + pass_index * PASS_STRIDE


def plan_phases(spec: RunSpec, world_size: int) -> list[PhasePlan]:
    """The phases of ``spec`` in order, with steps and epochs for ``world_size`` ranks."""
    plans: list[PhasePlan] = []
    next_epoch = 0
    for index, phase in enumerate(spec.train.phases):
        global_batch = phase.batch_per_gpu * world_size
        steps = max(1, math.ceil(phase.samples / global_batch))
        per_epoch = math.ceil(spec.samples_per_epoch(phase) / global_batch)
        plan = PhasePlan(
            index=index, name=phase.name, resolution=phase.resolution,
            batch_per_rank=phase.batch_per_gpu, world_size=world_size, steps=steps,
            steps_per_epoch=min(per_epoch, steps), first_sampler_epoch=next_epoch, lr=phase.lr,
            warmup=phase.warmup, requested_samples=phase.samples,
        )
        plans.append(plan)
        next_epoch += plan.epochs
    return plans


def worker_quota(steps: range, workers: int, logical: int) -> int:
    """Batches logical reader ``logical`` of ``workers`` yields for ``steps`` (round-robin by step)."""
    first = steps.start + (logical - steps.start) % workers
    return len(range(first, steps.stop, workers))
