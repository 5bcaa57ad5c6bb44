"""The report's figures (matplotlib, Agg backend: no display needed, works in CI and DVC).

Each function draws one PNG from plain data and returns its path, or None when the data it needs
is absent (e.g. no LayerScale gamma columns when LayerScale is off), so the report can say why a
figure is missing instead of drawing an empty one. Files are written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hjepa.core.io import atomic_path  # noqa: E402

__all__ = [
    "confusion_matrix",
    "gamma_columns",
    "layerscale_gammas",
    "level_columns",
    "loss_curves",
    "probe_bars",
    "save",
    "schedules",
    "throughput",
]

_LEVEL = re.compile(r"^loss_level_(\d+)$")
_GAMMA = re.compile(r"^gamma_(ctx|tgt)_block(\d+)$")


def save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically and close it (figures otherwise leak memory)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def level_columns(log: pd.DataFrame) -> list[str]:
    cols = [c for c in log.columns if _LEVEL.match(c)]
    return sorted(cols, key=lambda c: int(_LEVEL.match(c).group(1)))  # type: ignore[union-attr]


def gamma_columns(log: pd.DataFrame) -> dict[str, list[str]]:
    """``{"ctx": [...], "tgt": [...]}`` gamma columns ordered by block."""
    out: dict[str, list[tuple[int, str]]] = {"ctx": [], "tgt": []}
    for c in log.columns:
        m = _GAMMA.match(c)
        if m:
            out[m.group(1)].append((int(m.group(2)), c))
    return {k: [c for _, c in sorted(v)] for k, v in out.items() if v}


def uses_invariance(log: pd.DataFrame) -> bool:
    """Whether the run had the two-view invariance term (logs from before it have no column)."""
    return "inv_loss" in log.columns and bool((log["inv_loss"] > 0).any())


def loss_curves(log: pd.DataFrame, path: Path) -> Path:
    """Total loss, each hierarchy level's loss and the regulariser against the step."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(log["step"], log["loss"], label="total", linewidth=2, color="black")
    for col in level_columns(log):
        ax.plot(log["step"], log[col], label=col.replace("loss_", "").replace("_", " "))
    if "reg_loss" in log.columns:  # the weighted VICReg term, part of the total
        ax.plot(log["step"], log["reg_loss"], label="regulariser (VICReg)", linestyle="--")
    if uses_invariance(log):  # unweighted; weighted by model.invariance_weight in the total
        ax.plot(log["step"], log["inv_loss"], label="two-view invariance", linestyle=":")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Pretraining loss per hierarchy level")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def schedules(log: pd.DataFrame, path: Path) -> Path | None:
    """lr, weight decay and EMA momentum schedules (those columns present)."""
    cols = [c for c in ("lr", "weight_decay", "ema_momentum") if c in log.columns]
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        ax.plot(log["step"], log[col])
        ax.set_title(col.replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle("Schedules")
    return save(fig, path)


def layerscale_gammas(log: pd.DataFrame, path: Path) -> Path | None:
    """Mean |gamma| per block over training, context and target encoders side by side."""
    groups = gamma_columns(log)
    if not groups:
        return None
    titles = {"ctx": "context encoder", "tgt": "target (EMA) encoder"}
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    for ax, (kind, cols) in zip(axes[0], groups.items(), strict=True):
        for col in cols:
            ax.plot(log["step"], log[col], label=col.split("_")[-1])
        ax.set_title(f"LayerScale mean |gamma|: {titles[kind]}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save(fig, path)


def throughput(log: pd.DataFrame, path: Path) -> Path | None:
    """Images per second over training (and target feature std, the collapse monitor)."""
    cols = [c for c in ("images_per_s", "target_std") if c in log.columns]
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.2), squeeze=False)
    titles = {"images_per_s": "throughput (images/s)", "target_std": "target feature std"}
    for ax, col in zip(axes[0], cols, strict=True):
        ax.plot(log["step"], log[col])
        ax.set_title(titles[col])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return save(fig, path)


def probe_bars(rows: Sequence[tuple[str, float | None, float | None]], path: Path) -> Path:
    """Grouped bars: linear and k-NN top-1 for each feature source (pretrained, baselines)."""
    labels = [r[0] for r in rows]
    linear = [np.nan if r[1] is None else 100 * r[1] for r in rows]
    knn = [np.nan if r[2] is None else 100 * r[2] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for offset, values, name in ((-0.2, linear, "linear probe"), (0.2, knn, "k-NN")):
        bars = ax.bar(x + offset, values, width=0.4, label=name)
        shown = ["" if np.isnan(v) else f"{v:.1f}" for v in values]  # a source without a probe
        ax.bar_label(bars, labels=shown, fontsize="small")
    ax.set_xticks(x, labels)
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Frozen-feature evaluation")
    ax.legend(loc="lower right")
    return save(fig, path)


def confusion_matrix(confusion: pd.DataFrame, class_names: Sequence[str], path: Path) -> Path:
    """Counts of (actual, predicted) class names as a heatmap, rows = actual."""
    names = list(class_names) or sorted(
        set(confusion["actual"].astype(str)) | set(confusion["predicted"].astype(str))
    )
    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for a, p in zip(
        confusion["actual"].astype(str), confusion["predicted"].astype(str), strict=True
    ):
        if a in index and p in index:
            counts[index[a], index[p]] += 1
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Linear probe confusion matrix (test)")
    if len(names) <= 20:
        limit = counts.max() / 2 if counts.size else 0
        for i in range(len(names)):
            for j in range(len(names)):
                colour = "white" if counts[i, j] > limit else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path)
