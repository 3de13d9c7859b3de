"""The train stage: OpenCLIP pre-training with per-epoch DynamiCS sampling, under torchrun.

Modules: :mod:`~dynamics.train.plan` (step/epoch arithmetic), :mod:`~dynamics.train.stream` (the
undecoded, sampled, shuffled, resumable sample stream of one reader), :mod:`~dynamics.train.data`
(batches, data loader), :mod:`~dynamics.train.decode` (crop-aware reduced-scale JPEG decode
with open_clip's transform), :mod:`~dynamics.train.model` (open_clip model by name or
inline config), :mod:`~dynamics.train.loop` (one phase), :mod:`~dynamics.train.checkpoint`,
:mod:`~dynamics.train.logs` and :mod:`~dynamics.train.main` (``dynamics stage train``).
"""
