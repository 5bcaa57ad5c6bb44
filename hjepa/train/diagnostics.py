"""Cheap representation diagnostics logged once per epoch during pretraining.

Why these three: issue 9's failure (pretraining made features worse than random init) showed up
as features dominated by token position and pooled vectors of low rank, invisible in the loss.

- ``effective_rank``: exp of the entropy of the normalised singular values of pooled features
  (Roy & Vetterli 2007): 1 = every image maps to one direction, D = isotropic.
- ``position_share``: the share of token-feature variance explained by the token's position alone
  (per-position means over the batch); near 1 means the features say where, not what.
- ``loo_knn_accuracy``: leave-one-out weighted k-NN on a small labelled held-out set (the val
  split; labels used only for this monitor), the online proxy for the probe's k-NN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hjepa.core.knn import knn_vote, l2_normalise
from hjepa.core.prepared import load_split
from hjepa.core.transforms import to_model_input

__all__ = [
    "EpochDiagnostics",
    "effective_rank",
    "encoder_diagnostics",
    "loo_knn_accuracy",
    "position_share",
]

MONITOR_K = 20  # neighbours of the online k-NN monitor (the probe's default k)
MONITOR_TEMPERATURE = 0.07
DIAG_IMAGES = 256  # train images (fixed) behind the per-epoch rank / position-share diagnostics
MONITOR_IMAGES = 2048  # at most this many val images (fixed) behind the online k-NN monitor


def effective_rank(x: Tensor) -> float:
    """exp(entropy of σ/Σσ) of the centred (N, D) matrix ``x``; 0.0 for an all-constant batch."""
    x = x.double() - x.double().mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def position_share(tokens: Tensor) -> float:
    """Fraction of the variance of ``tokens`` (B, N, D) explained by the position index N."""
    t = tokens.double()
    total = (t - t.mean(dim=(0, 1), keepdim=True)).pow(2).sum(-1).mean()
    per_pos = t.mean(dim=0, keepdim=True)
    between = (per_pos - t.mean(dim=(0, 1), keepdim=True)).pow(2).sum(-1).mean()
    return float(between / total) if total > 0 else 0.0


def loo_knn_accuracy(
    feats: np.ndarray,
    labels: np.ndarray,
    k: int = MONITOR_K,
    temperature: float = MONITOR_TEMPERATURE,
) -> float:
    """Leave-one-out cosine k-NN (DINO weighting) accuracy of ``feats`` (N, D) on ``labels``."""
    n = len(feats)
    if n < 2:
        return float("nan")
    x = feats.astype(np.float64)
    x = l2_normalise((x - x.mean(0)) / np.maximum(x.std(0), 1e-8), np.float64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)  # leave one out: an image never votes for itself
    bank_labels = torch.as_tensor(labels, dtype=torch.int64)
    votes = knn_vote(
        torch.from_numpy(sims), bank_labels, min(k, n - 1), temperature, int(labels.max()) + 1
    )
    preds = votes.numpy()
    return float(np.mean(preds == labels))


@torch.no_grad()
def encoder_diagnostics(
    encoder: torch.nn.Module,
    images: Tensor,
    labels: np.ndarray | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Effective rank of pooled features and position share of the (layer-normed) final tokens
    of ``encoder`` on ``images``; with ``labels``, also the leave-one-out k-NN accuracy."""
    was_training = encoder.training
    encoder.eval()
    tokens = torch.cat(
        [
            encoder(images[i : i + batch_size]).tokens.float()
            for i in range(0, len(images), batch_size)
        ]
    )
    encoder.train(was_training)
    normed = torch.nn.functional.layer_norm(tokens, (tokens.shape[-1],))
    pooled = tokens.mean(dim=1)
    out: dict[str, Any] = {
        "effective_rank": effective_rank(pooled.cpu()),
        "position_share": position_share(normed.cpu()),
    }
    if labels is not None:
        out["knn_monitor"] = loo_knn_accuracy(pooled.cpu().numpy(), np.asarray(labels))
    return out


class EpochDiagnostics:
    """What pretraining logs about the EMA target encoder (the one the probe reads) at each
    epoch's end: ``encoder_diagnostics`` on a fixed draw of train images and, every
    ``monitor_every`` epochs and at the last, the online k-NN on a fixed draw of val images
    (``monitor_every`` 0: never). Fixed draws, so memory and time do not grow with the data set
    and every epoch is measured on the same images."""

    def __init__(
        self,
        train_images: np.ndarray,
        seed: int,
        epochs: int,
        monitor_every: int,
        data_dir: Path,
    ) -> None:
        pick = np.random.default_rng(seed).permutation(len(train_images))[:DIAG_IMAGES]
        self.images = to_model_input(np.array(train_images[np.sort(pick)]))
        self.epochs, self.monitor_every = epochs, monitor_every
        self.monitor: tuple[Tensor, np.ndarray] | None = None
        if monitor_every > 0:
            val_images, val_labels = load_split(data_dir, "val")
            rows = np.random.default_rng(seed).permutation(len(val_images))[:MONITOR_IMAGES]
            rows = np.sort(rows)
            self.monitor = (to_model_input(val_images[rows]), np.asarray(val_labels[rows]))

    def __call__(
        self, encoder: torch.nn.Module, epoch: int, device: torch.device
    ) -> dict[str, Any]:
        """The row entries after 0-based ``epoch``: ``knn_monitor`` is "" between monitor
        epochs (and absent when the monitor is off)."""
        out = encoder_diagnostics(encoder, self.images.to(device))
        if self.monitor is not None:
            every = self.monitor_every
            knn: Any = ""
            if (epoch + 1) % every == 0 or epoch + 1 == self.epochs:
                images, labels = self.monitor
                knn = encoder_diagnostics(encoder, images.to(device), labels)["knn_monitor"]
            out["knn_monitor"] = knn
        return out
