"""The one weighted k-NN vote, shared by the probe stage and pretraining's online monitor.

DINO's rule: the k most similar bank rows vote for their label with weight exp(sim / T). Keeping
one implementation means the monitor in ``metrics/pretrain.json`` and the probe's ``knn_top1``
can only differ by their data, never by their arithmetic.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_vote", "l2_normalise"]


def l2_normalise(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_vote(
    sims: np.ndarray, bank_labels: np.ndarray, k: int, temperature: float, num_classes: int
) -> np.ndarray:
    """Predicted label per row of ``sims`` (queries × bank cosine similarities, at most 1).

    ``k`` is clamped to the bank size; entries set to ``-inf`` (e.g. the query itself in a
    leave-one-out run) never get a vote's weight.
    """
    k = min(k, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    weights = np.exp((top_sims - 1.0) / temperature)  # shifted by the max similarity 1: no overflow
    votes = np.zeros((len(sims), num_classes), dtype=np.float64)
    np.add.at(votes, (np.arange(len(sims))[:, None], bank_labels[top]), weights)
    return votes.argmax(axis=1)
