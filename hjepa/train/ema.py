"""The target encoder as an exponential moving average of the context encoder.

Why every floating-point parameter AND buffer: the target encoder must be a true average of the
online one, LayerScale gammas and learned position embeddings included (a stale gamma would make
the teacher a different network). Integer buffers (counters) are not averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ema_update", "momentum_at"]


def momentum_at(step: int, total_steps: int, start: float, end: float) -> float:
    """EMA momentum at ``step``: linear from ``start`` (step 0) to ``end`` (step ``total_steps``);
    steps outside ``[0, total_steps]`` are clamped."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    frac = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * frac


def _float_tensors(module: nn.Module) -> tuple[list[str], list[Tensor]]:
    names, tensors = [], []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point():
            names.append(name)
            tensors.append(t)
    return names, tensors


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place, for every floating-point parameter and buffer: ``t = m·t + (1 − m)·o``."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_names, t_tensors = _float_tensors(target)
    o_names, o_tensors = _float_tensors(online)
    if t_names != o_names:
        raise ValueError("ema_update: target and online modules have different tensors")
    if not t_tensors:
        return
    o_tensors = [o.to(t.dtype) for o, t in zip(o_tensors, t_tensors, strict=True)]
    torch._foreach_mul_(t_tensors, momentum)
    torch._foreach_add_(t_tensors, o_tensors, alpha=1.0 - momentum)
