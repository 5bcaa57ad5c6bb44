"""The H-JEPA objective: smooth L1 per hierarchy level, weighted sum.

Why a mask-aware mean: contexts and coarse target cells are padded to the longest in the batch,
and padding must neither add error nor dilute the mean. With no padding this is exactly
``F.smooth_l1_loss(pred, target)`` (I-JEPA's loss: mean over all elements, beta 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["hierarchical_loss", "masked_smooth_l1"]


def masked_smooth_l1(pred: Tensor, target: Tensor, pad: Tensor | None = None) -> Tensor:
    """Smooth L1 (beta 1), mean over the elements of non-padded tokens.

    ``pred``/``target`` (..., D); ``pad`` (...) bool, True = padding (excluded), or None.
    """
    per = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=1.0)
    if pad is None:
        return per.mean()
    keep = (~pad).unsqueeze(-1).to(per.dtype)
    count = keep.sum() * per.shape[-1]
    return (per * keep).sum() / count.clamp_min(1.0)


def hierarchical_loss(
    preds: Sequence[Tensor],
    targets: Sequence[Tensor],
    pads: Sequence[Tensor | None],
    weights: Sequence[float],
) -> tuple[Tensor, list[Tensor]]:
    """Weighted sum of per-level losses, and the per-level losses (detached), in level order."""
    if not (len(preds) == len(targets) == len(pads) == len(weights)) or not preds:
        raise ValueError("preds, targets, pads and weights need one entry per level (at least 1)")
    levels = [masked_smooth_l1(p, t, m) for p, t, m in zip(preds, targets, pads, strict=True)]
    total = torch.stack([w * v for w, v in zip(weights, levels, strict=True)]).sum()
    return total, [v.detach() for v in levels]
