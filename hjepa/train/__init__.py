"""The ``pretrain`` stage: batches with augmentations and masks, the optimiser loop, EMA,
schedules, checkpoints and resume, DDP, and the per-epoch representation diagnostics.

Entry point: ``hjepa.train.trainer.pretrain``. Nothing is imported here, so that importing one
module (e.g. ``hjepa.train.masks`` for the audit) does not load the whole loop.
"""
