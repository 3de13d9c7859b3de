"""The train stage: OpenCLIP pre-training with per-epoch DynamiCS sampling, under torchrun.

Modules: :mod:`~dynamics.stages.train.plan` (step/epoch arithmetic), :mod:`~dynamics.stages.train.stream` (the
undecoded, sampled, shuffled, resumable sample stream of one reader), :mod:`~dynamics.stages.train.data`
(batches, data loader), :mod:`~dynamics.stages.train.tokens` (captions' BPE ids stored by the embed stage),
:mod:`~dynamics.stages.train.decode` (crop-aware reduced-scale JPEG decode
to uint8 crops with open_clip's transform), :mod:`~dynamics.stages.train.gpu_decode` (``train.decode:
device``: batched JPEG decode on the training device; normalisation on the device),
:mod:`~dynamics.stages.train.model` (open_clip model by name or inline config),
:mod:`~dynamics.stages.train.loop` (one phase), :mod:`~dynamics.stages.train.checkpoint`,
:mod:`~dynamics.stages.train.logs` and :mod:`~dynamics.stages.train.main` (``dynamics stage train``);
open_clip_train's options: :mod:`~dynamics.stages.train.step` (loss, accumulation),
:mod:`~dynamics.stages.train.fsdp` (FSDP2, sharded checkpoints), :mod:`~dynamics.stages.train.export`,
:mod:`~dynamics.stages.train.ineval` (eval while training), :mod:`~dynamics.stages.train.wandb_report`.
"""
