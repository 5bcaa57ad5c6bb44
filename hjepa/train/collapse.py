"""Dimensional-collapse detection from the per-epoch effective rank of the pooled features.

Why: a JEPA without an anti-collapse term can map every image into a handful of directions while
its loss falls smoothly (issue 20: H-JEPA alone on digits ended at an effective rank of 4.2 of 128,
and both probes fell below the random init). The target-std check (``COLLAPSE_STD``) only catches
the complete collapse to one vector; this one catches the dimensional kind and says so loudly.

The check is a pure function of the effective ranks logged so far (``pretrain_log.tsv``), so a
resumed run reaches the same verdict as an uninterrupted one, with no state of its own.

Two signals, each with a constant chosen from this project's measurements (digits, width 128):

- **Low rank**: the effective rank is below ``max(MIN_RANK, RANK_FRACTION × width)`` (6.4 of 128).
  In this project's digits screens (benchmarks/RESULTS.md) every run at 5.5 or below gained nothing
  significant on the 20-NN probe over its random init (−7.1 to +1.2 points: issue 9's failure at
  4.5, the other recipes without a regulariser at 3.9–5.0), and issue 20's H-JEPA alone at 4.2
  lost 21 points; weak regularisers at 6.1–7.0 (SIGReg, VICReg 0.01) gained +1.1 to +6.6; every
  run at 7.5 or above gained +8.9 or more (VICReg 0.1 at 8.1, the previous defaults 12.7–26,
  today's default 54.4, VICReg without invariance 61.5). 5 % sits in that grey zone: it catches
  every run without a gain and passes every recipe that worked (VICReg 0.01, at 6.1, would warn).
  A healthy run starts at its random init's rank (~5 of 128 on digits, below the threshold) and
  climbs through it within a few epochs (the default passes 9 at epoch 3 and 49 at epoch 20 of
  40). So this signal counts from the middle of the run (``ARM_FRACTION``) on, and there only
  while the rank is not setting a new best: a short run still climbing is not collapsing (cut to
  4 epochs, the default logs 5.1, 5.2, 9.0, 11.9; H-JEPA alone 5.1, 4.7, 4.0, 3.7). At the last
  epoch it counts in any case: that is the encoder the probe reads.
- **Falling fast**: the rank dropped below ``FALL_FRACTION`` (a quarter) of its best so far after
  that best had cleared the threshold: an encoder that spread its features out and then lost
  three quarters of the directions. Armed from the first epoch, so a late collapse is reported
  before the rank reaches the floor. No measured healthy run lost rank during training (the
  default's rank rises monotonically).

The first epoch that trips either signal is the one reported; later epochs do not re-warn.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from hjepa.core.errors import UserError

__all__ = [
    "ARM_FRACTION",
    "COLLAPSE_STD",
    "FALL_FRACTION",
    "MIN_RANK",
    "RANK_FRACTION",
    "CollapseCheck",
    "check_collapse",
    "epoch_alarms",
    "rank_threshold",
    "warn",
]

COLLAPSE_STD = 1e-3  # target-feature std below this: every input maps to nearly one vector

RANK_FRACTION = 0.05  # low rank: effective rank below 5 % of the feature width ...
MIN_RANK = 2.0  # ... or below 2 on narrow encoders (< 2 = one dominant direction)
FALL_FRACTION = 0.25  # falling fast: below a quarter of the best rank so far
ARM_FRACTION = 0.5  # the low-rank signal counts from this fraction of the epochs on


def rank_threshold(width: int, samples: int | None = None) -> float:
    """The effective rank below which pooled features of ``width`` dimensions, measured on
    ``samples`` images, count as collapsed. N images span at most N - 1 directions, so a width
    above that is measured against N - 1 instead (the per-epoch diagnostics use 256 images)."""
    measurable = width if samples is None else min(width, max(samples - 1, 1))
    return max(MIN_RANK, RANK_FRACTION * measurable)


@dataclass(frozen=True)
class CollapseCheck:
    """The verdict on one run so far. Without a detection, ``epoch`` is None and the ranks are
    those of the last epoch and the best epoch."""

    detected: bool
    reason: str | None  # "low_rank" | "falling" | None
    epoch: int | None  # first epoch (1-based) that tripped a signal
    effective_rank: float  # at ``epoch`` (or the last epoch)
    best_effective_rank: float  # the best up to then
    best_epoch: int
    width: int
    threshold: float
    epochs: int

    def as_metrics(self) -> dict[str, Any]:
        """The ``collapse`` block of ``metrics/pretrain.json``."""
        return {
            "detected": self.detected,
            "reason": self.reason,
            "epoch": self.epoch,
            "effective_rank": self.effective_rank,
            "best_effective_rank": self.best_effective_rank,
            "width": self.width,
            "threshold": self.threshold,
        }

    def message(self) -> str:
        """One log line starting with ``warning:`` (Prefect flows log such lines as WARNING)."""
        where = f"epoch {self.epoch}/{self.epochs}"
        rank = f"{self.effective_rank:.1f} of {self.width}"
        if self.reason == "falling":
            best = f"{self.best_effective_rank:.1f} at epoch {self.best_epoch}"
            why = f"below a quarter of its best so far ({best})"
        else:
            why = f"below the threshold of {self.threshold:.1f} (hjepa/train/collapse.py)"
        return (
            f"warning: dimensional collapse at {where}: the effective rank of the pooled features "
            f"is {rank}, {why}; the encoder maps every image into a few directions and the probes "
            "will suffer. An anti-collapse term "
            "(model.vicreg_weight, model.invariance_weight) or, for a short run, more epochs "
            "usually lifts it."
        )


def check_collapse(
    ranks: Sequence[float], width: int, epochs: int, samples: int | None = None
) -> CollapseCheck:
    """The verdict after ``len(ranks)`` of ``epochs`` epochs, ``ranks[i]`` logged at epoch i+1
    on ``samples`` images."""
    if not ranks:
        raise ValueError("check_collapse needs the effective rank of at least one epoch")
    threshold = rank_threshold(width, samples)
    armed_from = max(1, math.ceil(ARM_FRACTION * epochs))
    best, best_epoch = -math.inf, 0
    for epoch, rank in enumerate(ranks, start=1):
        climbing = rank > best
        if climbing:
            best, best_epoch = rank, epoch
        reason = None
        if best >= threshold and rank < FALL_FRACTION * best:
            reason = "falling"
        elif rank < threshold and epoch >= armed_from and (not climbing or epoch == epochs):
            reason = "low_rank"
        if reason is not None:
            return CollapseCheck(
                True, reason, epoch, rank, best, best_epoch, width, threshold, epochs
            )
    return CollapseCheck(False, None, None, ranks[-1], best, best_epoch, width, threshold, epochs)


def warn(message: str) -> None:
    """Write ``message`` to stderr as its own line, above any progress bar."""
    tqdm.write(message, file=sys.stderr)


def epoch_alarms(
    epoch: int, loss: float, target_std: float, lr: float, collapse: CollapseCheck, main: bool
) -> None:
    """The end of 1-based ``epoch``: stop on a loss that is no longer finite (with the lever to
    pull); on the ``main`` process, warn of a complete collapse (target std below
    ``COLLAPSE_STD``) and, at the epoch that first tripped it, of ``collapse``."""
    if not math.isfinite(loss):
        raise UserError(
            f"loss became {loss} in epoch {epoch}; lower train.lr ({lr}) or raise "
            "train.warmup_epochs"
        )
    if not main:
        return
    if target_std < COLLAPSE_STD:
        warn(
            f"warning: target features collapsed in epoch {epoch} (std {target_std:.2e} "
            f"< {COLLAPSE_STD}); the encoder outputs nearly the same vector for every input"
        )
    if collapse.detected and collapse.epoch == epoch:
        warn(collapse.message())
