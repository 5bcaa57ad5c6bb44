"""The H-JEPA composite: context encoder, EMA target encoder, hierarchical predictor, loss.

One forward step (``HJEPA.forward``):

1. The context encoder runs on the context tokens only (``masks.context_idx``; padding hidden).
2. Under ``torch.no_grad`` the target encoder runs on the FULL image and returns the outputs of
   every block that a hierarchy level names. Level ``l`` = (depth, scale, weight): its target is
   the output of block ``depth`` (for the last block: after the encoder's final norm, exactly as
   I-JEPA takes it), a parameter-free layer norm over channels, then ``scale×scale`` average
   pooling on the token grid.
3. Target positions per level: at scale 1 the target block's own tokens (``masks.target_idx``);
   at scale ``s`` > 1 the coarse cells the block touches (any of its tokens lies in the cell).
   Blocks of one batch may touch different numbers of cells, so each level's cells are packed
   ascending and padded to the batch maximum with a flag (``coarse_targets``); padding is
   excluded from attention keys and from the loss.
4. The predictor predicts all levels in one pass; loss = Σ weight_l · smoothL1_l
   (hjepa.models.loss).
5. Optional (``model.invariance_weight`` > 0): a second, independently augmented view of each
   image goes through the target encoder in the same no-grad pass; an MLP head maps the pooled
   context embedding to that view's layer-normed pooled target embedding (smooth L1). Token
   prediction alone teaches what a patch looks like *where it is*; this term asks for what the
   image *is*, whatever the crop, which is what a linear probe reads (BYOL-style: EMA target
   plus a predictor head, with the VICReg term on the same pooled embedding against collapse).

The target encoder is kept in eval mode (no stochastic depth in the teacher) and never receives
gradients; ``hjepa.train.ema.ema_update`` moves it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hjepa.core.config import DataParams, ModelParams
from hjepa.models.encoder import Encoder, build_encoder, encoder_arch, gather_tokens
from hjepa.models.loss import hierarchical_loss, masked_smooth_l1
from hjepa.models.predictor import Predictor, pool_grid
from hjepa.models.regularizers import pooled_embedding, vicreg

__all__ = ["HJEPA", "JEPAOutput", "Masks", "coarse_targets", "feature_std"]


@dataclass(frozen=True)
class Masks:
    """The model's mask input, drawn by ``hjepa.train.masks.MaskGenerator``: token indices into
    the row-major grid; every field is a tensor with the batch first."""

    context_idx: torch.Tensor  # (B, Nc) int64, sorted per image (real entries first)
    context_pad: torch.Tensor  # (B, Nc) bool, True where the entry is padding (all False: trim)
    target_idx: torch.Tensor  # (B, T, Nt) int64: T = num_targets blocks, each sorted
    target_pad: torch.Tensor  # (B, T, Nt) bool, True where padding (always False here)


@dataclass
class JEPAOutput:
    """``loss``: differentiable weighted sum; ``level_losses``: detached, hierarchy order;
    ``target_std``: detached collapse signal (see ``feature_std``)."""

    loss: Tensor
    level_losses: list[Tensor]
    target_std: Tensor
    reg_loss: Tensor | None = None  # detached weighted regulariser (None when its weight is 0)
    inv_loss: Tensor | None = None  # detached unweighted invariance loss (None when it is off)


def coarse_targets(
    target_idx: Tensor, target_pad: Tensor, grid_size: int, scale: int
) -> tuple[Tensor, Tensor]:
    """Cells of the ``scale``-pooled grid touched by each target block.

    ``target_idx``/``target_pad`` (B, T, Nt) on the fine grid → (B, T, K) ascending cell indices
    on the (grid/scale)² grid and their pad flags, K = the most cells any block touches; padded
    entries hold a valid (unused) cell index.
    """
    if scale == 1:
        return target_idx, target_pad
    side = grid_size // scale
    rows, cols = target_idx // grid_size, target_idx % grid_size
    cell = (rows // scale) * side + cols // scale
    hits = torch.zeros(*target_idx.shape[:2], side * side, dtype=torch.int32, device=cell.device)
    hits.scatter_add_(2, cell, (~target_pad).to(torch.int32))
    touched = hits > 0
    count = touched.sum(-1)
    k = int(count.max())
    order = torch.sort((~touched).to(torch.uint8), dim=-1, stable=True).indices[..., :k]
    pad = torch.arange(k, device=cell.device) >= count.unsqueeze(-1)
    return order, pad


def feature_std(features: Tensor) -> Tensor:
    """Mean over channels of the std across all (batch × token) rows: ~0 means collapse."""
    flat = features.float().reshape(-1, features.shape[-1])
    return flat.std(dim=0).mean()


class HJEPA(nn.Module):
    """Context encoder + EMA target encoder + predictor (module docstring).

    ``arch`` is the encoder's architecture (``encoder_arch``); ``levels`` the hierarchy as
    (encoder block depth, pooling scale, loss weight); ``predictor`` the predictor's ``width``,
    ``depth``, ``heads`` and ``layerscale_init``. ``from_params`` builds it from the ``model``
    and ``data`` params sections.
    """

    def __init__(
        self,
        arch: dict[str, Any],
        levels: Sequence[tuple[int, int, float]],
        predictor: dict[str, Any],
        vicreg_weight: float = 0.0,
        invariance_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid_size = int(arch["img_size"]) // int(arch["patch_size"])
        self.depth = int(arch["depth"])
        self.levels = [(int(d), int(s), float(w)) for d, s, w in levels]
        self.vicreg_weight = float(vicreg_weight)
        self.invariance_weight = float(invariance_weight)
        self.context_encoder: Encoder = build_encoder(arch)
        self.target_encoder: Encoder = copy.deepcopy(self.context_encoder)
        self.target_encoder.requires_grad_(False)
        self.target_encoder.eval()
        self.predictor = Predictor(
            encoder_width=int(arch["width"]),
            grid_size=self.grid_size,
            width=int(predictor["width"]),
            depth=int(predictor["depth"]),
            heads=int(predictor["heads"]),
            mlp_ratio=float(arch["mlp_ratio"]),
            layerscale_init=predictor.get("layerscale_init"),
            pos_embed=str(arch["pos_embed"]),
            scales=[s for _, s, _ in self.levels],
        )
        width = int(arch["width"])
        self.invariance_head: nn.Module | None = None
        if self.invariance_weight > 0:
            self.invariance_head = nn.Sequential(
                nn.Linear(width, 2 * width),
                nn.LayerNorm(2 * width),
                nn.GELU(),
                nn.Linear(2 * width, width),
            )

    @classmethod
    def from_params(cls, model: ModelParams, data: DataParams) -> HJEPA:
        ls, p = model.layerscale, model.predictor
        in_predictor, init_value = ls.in_predictor, ls.init_value
        return cls(
            arch=encoder_arch(model, data),
            levels=[(lv.depth, lv.scale, lv.weight) for lv in model.hierarchy],
            predictor={
                "width": p.width,
                "depth": p.depth,
                "heads": p.heads,
                "layerscale_init": init_value if in_predictor else None,
            },
            vicreg_weight=model.vicreg_weight,
            invariance_weight=model.invariance_weight,
        )

    def train(self, mode: bool = True) -> HJEPA:
        """Switch context encoder and predictor; the target encoder always stays in eval mode."""
        super().train(mode)
        self.target_encoder.eval()
        return self

    @property
    def needs_second_view(self) -> bool:
        """Whether ``forward`` needs ``second_view`` (the invariance term is on)."""
        return self.invariance_head is not None

    @torch.no_grad()
    def targets(
        self, images: Tensor, second_view: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor | None]:
        """Per level: layer-normed, pooled target features on that level's grid (B, cells, D);
        and, given ``second_view``, its layer-normed per-image mean embedding (B, D), from the
        same target-encoder call (one batch of 2B images instead of two passes)."""
        wanted = sorted({d for d, _, _ in self.levels if d != self.depth})
        n = images.shape[0]
        both = images if second_view is None else torch.cat([images, second_view])
        out = self.target_encoder(both, return_blocks=wanted)
        feats = []
        for depth, scale, _ in self.levels:
            h = out.tokens if depth == self.depth else out.blocks[depth]
            h = F.layer_norm(h[:n], (h.shape[-1],))
            feats.append(pool_grid(h, self.grid_size, scale))
        view_target = None
        if second_view is not None:
            pooled = out.tokens[n:].float().mean(dim=1)
            view_target = F.layer_norm(pooled, (pooled.shape[-1],))
        return feats, view_target

    def forward(
        self, images: Tensor, masks: Masks, second_view: Tensor | None = None
    ) -> JEPAOutput:
        """``second_view``: the same images under another augmentation draw; required when
        ``model.invariance_weight`` > 0, ignored otherwise."""
        if self.needs_second_view and second_view is None:
            raise ValueError(
                "model.invariance_weight > 0 needs second_view: the same images under an "
                "independent augmentation draw"
            )
        context = self.context_encoder(
            images, keep_idx=masks.context_idx, pad_mask=masks.context_pad
        ).tokens
        feats, view_target = self.targets(images, second_view if self.needs_second_view else None)
        queries = [
            coarse_targets(masks.target_idx, masks.target_pad, self.grid_size, scale)
            for _, scale, _ in self.levels
        ]
        preds = self.predictor(context, masks.context_idx, masks.context_pad, queries)
        targets = [gather_tokens(f, idx) for f, (idx, _) in zip(feats, queries, strict=True)]
        loss, level_losses = hierarchical_loss(
            preds, targets, [pad for _, pad in queries], [w for _, _, w in self.levels]
        )
        reg = self.regularizer(context, masks.context_pad)
        if reg is not None:
            loss = loss + reg
        inv = None
        if self.invariance_head is not None:
            assert view_target is not None  # checked above: the term is on, so a view was given
            pred = self.invariance_head(pooled_embedding(context, masks.context_pad))
            inv = masked_smooth_l1(pred, view_target)
            loss = loss + self.invariance_weight * inv
        return JEPAOutput(
            loss=loss,
            level_losses=level_losses,
            target_std=feature_std(feats[-1]),
            reg_loss=None if reg is None else reg.detach(),
            inv_loss=None if inv is None else inv.detach(),
        )

    def regularizer(self, context: Tensor, pad: Tensor | None) -> Tensor | None:
        """Weighted VICReg of the pooled context embeddings (None when the weight is 0)."""
        if self.vicreg_weight == 0:
            return None
        return self.vicreg_weight * vicreg(pooled_embedding(context, pad))
