"""Per-step schedules: learning rate (linear warmup, then cosine) and weight decay (cosine).

Pure functions of the step, so a resumed run continues the schedule exactly where it stopped (the
old codebase restarted its schedules on resume).
"""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warmup from ~0 to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def cosine_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (last step)."""
    progress = min(1.0, step / max(1, total_steps - 1))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))
