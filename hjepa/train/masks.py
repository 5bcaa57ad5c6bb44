"""I-JEPA multi-block masking that always terminates and never returns an empty mask.

Why this module exists: the I-JEPA reference collator (a) draws block corners with an exclusive
upper bound, so the last grid row and column are never masked and on small grids the context is
always the same top-left block; (b) retries forever when ``min_keep`` cannot be met (on an 8×8
grid it hangs); (c) cuts every context to the batch's shortest by keeping the *first* indices,
which biases the context towards the top rows. Here every random number comes from the caller's
``torch.Generator`` (a batch is a pure function of its seed, so kill-and-resume is bitwise exact),
every block position is reachable, retries are bounded, and the relaxations are explicit.

What one batch gets (``MaskGenerator.sample``):

* Block sizes are drawn once per batch, as in I-JEPA: a target scale ``s`` from
  ``mask.target_scale`` and an aspect ``a`` (height/width) from ``mask.target_aspect`` give a
  target block of ``h = round(sqrt(s·A·a))`` by ``w = round(sqrt(s·A/a))`` cells (``A`` = grid
  area, rounding half up, both clipped to ``[1, grid]``); a context scale from
  ``mask.context_scale`` gives a square context block of side ``round(sqrt(s·A))``.
* Per image, ``mask.num_targets`` target blocks are placed uniformly over *all* valid top-left
  corners (bounds inclusive). Targets may overlap each other, as in I-JEPA.
* Per image, the context is a uniformly placed context block minus the union of the targets.
  Context and targets never overlap.

Targets are never padded: all blocks of a batch have the same ``h·w`` cells, so ``target_pad`` is
all False (it is there so consumers treat context and targets alike). Contexts differ in length
per image: ``mask.context_batching: pad`` keeps each image's own context and pads the batch to the
longest (padding repeats the image's first real index and is flagged in ``context_pad``);
``trim`` cuts every context to the batch's shortest, keeping a uniformly random subset of each.

Relaxation order (each step only when the one before cannot succeed; ``MaskInfo`` reports it):

1. Per batch: a target block that would cover the whole grid loses its last row
   (``h = grid - 1``), so some cell can always stay context (``MaskInfo.target_shrunk``).
2. Per image: up to ``MAX_CONTEXT_TRIES`` context positions are tried; the first whose context
   (block minus targets) has at least ``mask.min_keep`` cells is used (``level`` 0).
3. Otherwise ``min_keep`` is lowered to what this image's targets leave free: the context becomes
   every non-target cell of the grid (``level`` 1), the largest context these targets allow.
4. If the targets cover the whole grid (possible on tiny grids, e.g. 2×2 with four 1×1 targets),
   one grid corner, drawn uniformly, is reserved as context and the targets are redrawn uniformly
   among the positions that avoid it (``level`` 2).

So every image always has at least one context cell and ``num_targets`` non-empty target blocks
of the batch's size; on 2×2 with 4 targets, ``min_keep`` and the context scale give way first,
then the target positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hjepa.core.config import MaskParams
from hjepa.core.errors import UserError
from hjepa.core.rounding import round_half_up
from hjepa.models.hjepa import Masks

__all__ = ["MAX_CONTEXT_TRIES", "MaskGenerator", "MaskInfo", "Masks", "mask_stats"]

# Context positions tried per image before falling back to "all non-target cells". Each try is a
# few tensor ops over the whole batch, so this bounds the work, not just the loop.
MAX_CONTEXT_TRIES = 20


@dataclass(frozen=True)
class MaskInfo:
    """How one batch was drawn: for logging, audits and tests (not needed for training)."""

    target_shape: tuple[int, int]  # (h, w) of every target block in the batch
    context_side: int  # side of the square context block before targets are removed
    target_shrunk: bool  # relaxation 0 applied: the target block would have covered the grid
    level: torch.Tensor  # (B,) int64 per image: 0 block context, 1 all non-target, 2 corner


def _square_sums(
    cells: torch.Tensor, top: torch.Tensor, left: torch.Tensor, k: int
) -> torch.Tensor:
    """Number of True cells in each k×k square at (top, left): (B, N) from (B, G, G)."""
    g1 = cells.shape[1] + 1
    prefix = torch.zeros(cells.shape[0], g1, g1, dtype=torch.int64)
    prefix[:, 1:, 1:] = cells.to(torch.int64).cumsum(1).cumsum(2)
    flat = prefix.flatten(1)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat.gather(1, r * g1 + c)

    return at(top + k, left + k) - at(top, left + k) - at(top + k, left) + at(top, left)


def _avoid_corner(
    g: int, h: int, w: int, num_targets: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxation step 4 on a g×g grid: ``num_targets`` h×w target corners drawn uniformly among
    positions that leave a uniformly drawn grid corner free (one always exists: the block is
    never the full grid)."""
    corner = int(torch.randint(0, 4, (1,), generator=generator))
    r, c = (0 if corner < 2 else g - 1), (0 if corner % 2 == 0 else g - 1)
    tops = torch.arange(g - h + 1)[:, None].expand(-1, g - w + 1).flatten()
    lefts = torch.arange(g - w + 1)[None, :].expand(g - h + 1, -1).flatten()
    hits = (tops <= r) & (r < tops + h) & (lefts <= c) & (c < lefts + w)
    choice = torch.multinomial(
        (~hits).to(torch.float64), num_targets, replacement=True, generator=generator
    )
    return tops[choice], lefts[choice]


def _rect(top: torch.Tensor, left: torch.Tensor, h: int, w: int, grid: int) -> torch.Tensor:
    """Boolean (…, grid, grid) masks of h×w rectangles with the given top-left corners."""
    cells = torch.arange(grid)
    rows = (cells >= top[..., None]) & (cells < top[..., None] + h)
    cols = (cells >= left[..., None]) & (cells < left[..., None] + w)
    return rows[..., :, None] & cols[..., None, :]


def _pack(mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) bool → sorted indices (B, length) and pad mask; pads repeat the first real index."""
    counts = mask.sum(1)
    # A stable sort of "is not selected" puts the selected indices first, in ascending order.
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :length]
    pad = torch.arange(length)[None, :] >= counts[:, None]
    idx = torch.where(pad, order[:, :1], order)
    return idx.to(torch.int64), pad


class MaskGenerator:
    """Draws ``Masks`` for a batch on a square token grid of side ``grid_size`` (see module)."""

    def __init__(
        self,
        grid_size: int,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 4,
        context_batching: str = "pad",
    ) -> None:
        """I-JEPA's defaults; ``from_params`` builds one from the ``mask`` params section."""
        if grid_size < 2:
            raise UserError(
                f"the token grid is {grid_size}×{grid_size} (data.image_size / "
                "model.patch_size); masking needs at least 2×2 so that a token can be context "
                "and another target: raise data.image_size or lower model.patch_size"
            )
        self.grid_size = int(grid_size)
        self.num_tokens = self.grid_size**2
        self.num_targets = int(num_targets)
        self.target_scale = tuple(float(x) for x in target_scale)
        self.target_aspect = tuple(float(x) for x in target_aspect)
        self.context_scale = tuple(float(x) for x in context_scale)
        self.min_keep = int(min_keep)
        self.context_batching = str(context_batching)

    @classmethod
    def from_params(cls, params: MaskParams, grid_size: int) -> MaskGenerator:
        """From the ``mask`` section; every key is read here, once, so the read record matches
        dvc.yaml's pretrain params."""
        return cls(
            grid_size,
            num_targets=params.num_targets,
            target_scale=params.target_scale,
            target_aspect=params.target_aspect,
            context_scale=params.context_scale,
            min_keep=params.min_keep,
            context_batching=params.context_batching,
        )

    # ------------------------------------------------------------------------------ block sizes
    def target_shape(self, scale: float, aspect: float) -> tuple[tuple[int, int], bool]:
        """(h, w) of a target block for a drawn scale and aspect, and whether step 1 shrank it."""
        g, area = self.grid_size, scale * self.num_tokens
        h = min(max(round_half_up(math.sqrt(area * aspect)), 1), g)
        w = min(max(round_half_up(math.sqrt(area / aspect)), 1), g)
        if h == g and w == g:
            return (g - 1, w), True
        return (h, w), False

    def context_side(self, scale: float) -> int:
        """Side of the square context block for a drawn context scale."""
        return min(max(round_half_up(math.sqrt(scale * self.num_tokens)), 1), self.grid_size)

    # ---------------------------------------------------------------------------------- sampling
    def sample(self, batch_size: int, generator: torch.Generator) -> Masks:
        """Masks for ``batch_size`` images, drawn only from ``generator`` (module docstring)."""
        return self.sample_with_info(batch_size, generator)[0]

    def sample_with_info(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[Masks, MaskInfo]:
        """``sample`` plus how the batch was drawn (block sizes, relaxation level per image)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        g, b, t, tries = self.grid_size, batch_size, self.num_targets, MAX_CONTEXT_TRIES
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        (h, w), shrunk = self.target_shape(
            self.target_scale[0] + u[0] * (self.target_scale[1] - self.target_scale[0]),
            self.target_aspect[0] + u[1] * (self.target_aspect[1] - self.target_aspect[0]),
        )
        k = self.context_side(
            self.context_scale[0] + u[2] * (self.context_scale[1] - self.context_scale[0])
        )
        t_top = torch.randint(0, g - h + 1, (b, t), generator=generator)
        t_left = torch.randint(0, g - w + 1, (b, t), generator=generator)
        c_top = torch.randint(0, g - k + 1, (b, tries), generator=generator)
        c_left = torch.randint(0, g - k + 1, (b, tries), generator=generator)

        covered = self._union(t_top, t_left, h, w)  # (B, G, G)
        # Context cells of each try = k² minus targets inside the block (2-D prefix sums).
        free = k * k - _square_sums(covered, c_top, c_left, k)  # (B, tries)
        ok = free >= self.min_keep
        first = torch.where(ok, torch.arange(tries), tries).min(1).values.clamp(max=tries - 1)
        pick = first[:, None]
        block = _rect(c_top.gather(1, pick)[:, 0], c_left.gather(1, pick)[:, 0], k, k, g)
        accepted = ok.any(1)
        context = torch.where(accepted[:, None, None], block & ~covered, ~covered)
        level = torch.where(accepted, 0, 1)

        for i in covered.flatten(1).all(1).nonzero().flatten().tolist():
            t_top[i], t_left[i] = _avoid_corner(g, h, w, self.num_targets, generator)
            context[i] = ~self._union(t_top[i : i + 1], t_left[i : i + 1], h, w)[0]
            level[i] = 2

        masks = self._assemble(context.flatten(1), t_top, t_left, h, w, generator)
        info = MaskInfo((h, w), k, shrunk, level.to(torch.int64))
        return masks, info

    def _union(self, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
        out = torch.zeros(top.shape[0], self.grid_size, self.grid_size, dtype=torch.bool)
        for j in range(top.shape[1]):  # one block at a time: memory stays (B, G, G)
            out |= _rect(top[:, j], left[:, j], h, w, self.grid_size)
        return out

    def _assemble(
        self,
        context: torch.Tensor,
        t_top: torch.Tensor,
        t_left: torch.Tensor,
        h: int,
        w: int,
        generator: torch.Generator,
    ) -> Masks:
        g = self.grid_size
        counts = context.sum(1)
        if self.context_batching == "trim":
            # Keep a uniformly random subset of the batch-minimum size (I-JEPA keeps the first
            # indices, i.e. the top rows).
            keep = int(counts.min())
            keys = torch.rand(context.shape, generator=generator)
            keys = keys.masked_fill(~context, 2.0)
            chosen = keys.topk(keep, dim=1, largest=False).indices
            context = torch.zeros_like(context).scatter_(1, chosen, True)
            length = keep
        else:
            length = int(counts.max())
        context_idx, context_pad = _pack(context, length)
        offsets = (torch.arange(h)[:, None] * g + torch.arange(w)[None, :]).flatten()
        target_idx = (t_top * g + t_left)[..., None] + offsets
        return Masks(
            context_idx=context_idx,
            context_pad=context_pad,
            target_idx=target_idx.to(torch.int64),
            target_pad=torch.zeros(target_idx.shape, dtype=torch.bool),
        )


def mask_stats(masks: Masks, num_tokens: int) -> dict[str, float]:
    """Batch means for logging and ``hjepa audit``.

    ``num_tokens`` is the grid area (``Masks`` holds only indices, so the area must be given):
    ``context_fraction`` (real context tokens / area), ``target_fraction`` (cells in the union of
    an image's target blocks / area) and ``padding_fraction`` (share of ``context_idx`` entries
    that are padding: compute spent on nothing).
    """
    b = masks.context_idx.shape[0]
    real_context = (~masks.context_pad).sum(1).to(torch.float64)
    union = torch.zeros(b, num_tokens, dtype=torch.bool)
    # Padded target entries repeat a real index of their block, so they do not change the union.
    union.scatter_(1, masks.target_idx.reshape(b, -1), True)
    return {
        "context_fraction": float((real_context / num_tokens).mean()),
        "target_fraction": float(union.sum(1).to(torch.float64).mean() / num_tokens),
        "padding_fraction": float(masks.context_pad.to(torch.float64).mean()),
    }
