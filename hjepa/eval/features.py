"""Frozen features for the probe: pooled encoder tokens, or raw pixels as a baseline.

Why one module: the pretrained encoder and its random-init twin must be read out identically
(same blocks, same pooling, same preprocessing as pretraining via ``to_model_input``), otherwise
the "gain over random init" would measure a readout difference.

Images are read from the (memory-mapped) split one batch at a time and converted per batch; the
output array is allocated once. No float copy of a whole split is ever made, so memory is the
features plus one batch, whatever the number of images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hjepa.core.errors import UserError
from hjepa.core.transforms import to_model_input

__all__ = [
    "FEATURE_MODES",
    "check_pool_grid",
    "encoder_readouts",
    "feature_depths",
    "pixel_features",
    "pixel_projection",
    "pool_tokens",
]

FEATURE_MODES = ("last", "hierarchy", "last_k")


def feature_depths(arch: dict[str, Any], mode: str, last_k: int) -> list[int]:
    """1-based block depths whose pooled outputs are concatenated; [] means the final tokens.

    ``last`` → [] (tokens after the final norm); ``hierarchy`` → the encoder's target-level
    depths; ``last_k`` → the last ``last_k`` blocks.
    """
    depth = int(arch["depth"])
    if mode == "last":
        return []
    if mode == "hierarchy":
        depths = sorted({int(d) for d in arch["hierarchy_depths"]})
        if not depths:
            raise UserError("probe.features = hierarchy, but the encoder has no hierarchy depths")
        return depths
    if mode == "last_k":
        if not 1 <= last_k <= depth:
            raise UserError(
                f"probe.last_k = {last_k}, but the encoder in models/encoder_ema.pt has depth "
                f"{depth}; use a value in 1..{depth}"
            )
        return list(range(depth - last_k + 1, depth + 1))
    raise UserError(f"probe.features = {mode!r}; allowed: {', '.join(FEATURE_MODES)}")


def check_pool_grid(pool_grid: int, grid_size: int, key: str = "probe.pool_grid") -> None:
    """``key`` (a readout's pool grid) must fit the encoder's token grid (one token per cell at
    most)."""
    if not 1 <= pool_grid <= grid_size:
        raise UserError(
            f"{key} = {pool_grid}, but the encoder in models/encoder_ema.pt has a "
            f"{grid_size}x{grid_size} token grid; use a value in 1..{grid_size}"
        )


def pool_tokens(tokens: torch.Tensor, pool_grid: int) -> torch.Tensor:
    """(B, N, D) row-major grid tokens → (B, pool_grid² · D): the mean of each of
    pool_grid × pool_grid spatial cells, concatenated cell by cell.

    Why: a global mean throws away *where* things are, and with small images the layout is much of
    what tells classes apart (raw pixels keep it, which is why they were hard to beat). Cells keep a
    coarse layout while the probe stays linear; ``pool_grid = 1`` is the usual global mean.
    """
    if pool_grid == 1:
        return tokens.mean(dim=1)
    b, n, d = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"pool_tokens needs a square token grid, got {n} tokens")
    grid = tokens.transpose(1, 2).reshape(b, d, side, side)
    cells = F.adaptive_avg_pool2d(grid, pool_grid)  # (B, D, g, g)
    return cells.flatten(2).transpose(1, 2).reshape(b, pool_grid * pool_grid * d)


def encoder_readouts(
    encoder: torch.nn.Module,
    images: np.ndarray,
    depths: list[int],
    batch_size: int,
    pool_grids: Sequence[int],
    desc: str = "features",
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """One pooled feature matrix (float32 N×D') of uint8 N×H×W×C ``images`` per entry of
    ``pool_grids``, all from one forward pass per batch (the linear probe and the k-NN may read
    the tokens differently; a second pass would double the cost on 10^6 images).

    With ``depths`` empty, the final (normed) tokens are pooled; otherwise each listed block's
    output is pooled and the results are concatenated in depth order. Pooling is the mean over
    each cell of a ``pool_grid`` × ``pool_grid`` split of the token grid (see ``pool_tokens``).
    """
    encoder = encoder.to(device).eval()
    outs: list[np.ndarray | None] = [None] * len(pool_grids)
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
            x = to_model_input(images[start : start + batch_size]).to(device)
            result = encoder(x, return_blocks=depths)
            levels = [result.blocks[d] for d in depths] if depths else [result.tokens]
            for i, grid in enumerate(pool_grids):
                pooled = torch.cat([pool_tokens(t, grid) for t in levels], dim=1)
                out = outs[i]
                if out is None:
                    out = outs[i] = np.empty((len(images), pooled.shape[1]), dtype=np.float32)
                out[start : start + len(pooled)] = pooled.float().cpu().numpy()
    return [np.zeros((0, 0), dtype=np.float32) if o is None else o for o in outs]


def pixel_projection(raw_dims: int, max_dims: int, seed: int) -> torch.Tensor | None:
    """The fixed map that bounds the raw-pixel baseline's cost: ``None`` (pixels kept as they
    are) when ``raw_dims <= max_dims``, else a Gaussian random projection raw_dims × max_dims
    with entries N(0, 1/max_dims), drawn on the CPU from ``seed`` alone (same matrix on every
    device, for every split and every run with that seed).

    Why random and not PCA: it needs no pass over the data, depends on no split, and keeps
    pairwise distances (Johnson–Lindenstrauss), which is what the k-NN baseline reads. Its
    memory is raw_dims × max_dims float32 (6 MiB for 32×32×3 → 512, 308 MiB for 224×224×3).
    """
    if raw_dims <= max_dims:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(raw_dims, max_dims, generator=generator) / math.sqrt(max_dims)


def pixel_features(
    images: np.ndarray,
    batch_size: int = 256,
    projection: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Raw pixels, flattened, with the same scaling the encoder gets (the baseline floor), then
    multiplied by ``projection`` when given (see ``pixel_projection``); in batches."""
    raw_dims = int(np.prod(images.shape[1:]))
    dims = raw_dims if projection is None else int(projection.shape[1])
    out = np.empty((len(images), dims), dtype=np.float32)
    proj = None if projection is None else projection.to(device)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start : start + batch_size]).to(device).flatten(1)
            if proj is not None:
                x = x @ proj
            out[start : start + len(x)] = x.cpu().numpy()
    return out
