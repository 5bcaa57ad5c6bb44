"""The one weighted k-NN vote, shared by the probe stage and pretraining's online monitor.

DINO's rule: the k most similar bank rows vote for their label with weight exp(sim / T). Keeping
one implementation means the monitor in ``metrics/pretrain.json`` and the probe's ``knn_top1``
can only differ by their data, never by their arithmetic. It is written in torch so the probe
scores on its device (CUDA when there is one) and picks the top k with ``topk``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["knn_vote", "l2_normalise"]


def l2_normalise(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_vote(
    sims: torch.Tensor,
    bank_labels: torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
) -> torch.Tensor:
    """Predicted label (int64) per row of ``sims`` (queries × bank cosine similarities, at
    most 1; ``bank_labels``: int64 on the same device).

    ``k`` is clamped to the bank size; entries set to ``-inf`` (e.g. the query itself in a
    leave-one-out run) never get a vote's weight. Ties between classes go to the lower label.
    """
    k = min(k, sims.shape[1])
    top_sims, top = sims.topk(k, dim=1)
    # Shifted by the max similarity 1: no overflow; float64 so close votes are summed exactly.
    weights = torch.exp((top_sims.double() - 1.0) / temperature)
    votes = torch.zeros(len(sims), num_classes, dtype=torch.float64, device=sims.device)
    votes.scatter_add_(1, bank_labels[top], weights)
    return votes.argmax(dim=1)
