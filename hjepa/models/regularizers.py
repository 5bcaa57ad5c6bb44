"""Anti-collapse / isotropy regulariser on the context encoder's pooled embeddings.

Why it exists (issue 9): on small data, JEPA's EMA target lets the encoder settle on features
that predict each other well but whose per-image means span only a handful of directions (the
tokens mostly encode their position, which averages away), so the pooled features the probe reads
have an effective rank of ~5 of 128 and k-NN accuracy falls *below* random init. VICReg's
variance and covariance terms (Bardes et al. 2022), applied to the per-image mean of the context
tokens, push that batch distribution towards unit-variance, decorrelated channels; the EMA target
inherits it. VICReg's own invariance term is not used here: token prediction and the separate
two-view term (``model.invariance_weight``, hjepa.models.hjepa) play that role.

Measured alternatives that were cut (benchmarks/RESULTS.md): LeJEPA's SIGReg (Epps–Pulley on
random projections) helped k-NN much less at every weight tried, and per-position centring of
the targets had no measurable effect.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pooled_embedding", "vicreg"]


def pooled_embedding(tokens: Tensor, pad: Tensor | None) -> Tensor:
    """Per-image mean of ``tokens`` (B, N, D) over non-padded tokens (``pad`` True = padding)."""
    if pad is None:
        return tokens.float().mean(dim=1)
    keep = (~pad).unsqueeze(-1).to(torch.float32)
    return (tokens.float() * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


def vicreg(emb: Tensor, eps: float = 1e-4) -> Tensor:
    """Variance hinge (every channel's batch std ≥ 1) + squared off-diagonal covariance / D of a
    (B, D) batch; 0 for a batch with identity covariance (needs B > 1)."""
    x = emb.float() - emb.float().mean(dim=0, keepdim=True)
    n, d = x.shape
    std = torch.sqrt(x.var(dim=0) + eps)
    var_term = torch.relu(1.0 - std).mean()
    cov = (x.T @ x) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    cov_term = off.pow(2).sum() / d
    return var_term + cov_term
