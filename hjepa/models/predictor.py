"""The H-JEPA predictor: a narrow transformer that predicts every target level in one pass.

I-JEPA's predictor projects the context tokens to its own width, adds their position embeddings,
appends one learned mask token (+ position embedding) per target position, and runs all target
blocks of a batch in ONE batched pass by repeating the context once per target block along the
batch dimension. This one does the same, extended to several hierarchy levels:

* each level has its own query tokens: the positions of the target block on that level's token
  grid (for a pooling scale ``s`` > 1: the coarse ``s×s`` cells the block touches), each a
  level-specific learned mask token plus the position embedding of that cell (the ``s×s``
  average of the fine position embeddings, so coarse and fine positions share one geometry);
* the queries of all levels sit in the same sequence after the context, so one pass serves every
  level; padded queries and padded context entries are hidden from attention as keys;
* one output head per level projects back to the encoder width.

With one level at scale 1 this is exactly I-JEPA's predictor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from hjepa.models.encoder import gather_tokens, key_padding_mask, make_pos_embed

__all__ = ["Predictor", "pool_grid"]


def pool_grid(x: Tensor, grid_size: int, scale: int) -> Tensor:
    """Average-pool row-major tokens (B, grid², D) over scale×scale cells → (B, (grid/s)², D)."""
    if scale == 1:
        return x
    b, _, d = x.shape
    img = x.transpose(1, 2).reshape(b, d, grid_size, grid_size)
    return F.avg_pool2d(img, scale).flatten(2).transpose(1, 2)


class Predictor(nn.Module):
    """Predicts target-encoder features of every level from context tokens (module docstring)."""

    def __init__(
        self,
        *,
        encoder_width: int,
        grid_size: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        layerscale_init: float | None,
        pos_embed: str,
        scales: Sequence[int],
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.scales = [int(s) for s in scales]
        self.embed = nn.Linear(encoder_width, width)
        self.mask_tokens = nn.Parameter(torch.zeros(len(self.scales), width))
        pe = make_pos_embed(pos_embed, width, grid_size)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(pe)
        else:
            self.register_buffer("pos_embed", pe)
        self.blocks = nn.ModuleList(
            Block(
                dim=width,
                num_heads=heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                init_values=layerscale_init,
                norm_layer=nn.LayerNorm,
            )
            for _ in range(depth)
        )
        for block in self.blocks:
            block.attn.fused_attn = True  # type: ignore[union-attr]
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(nn.Linear(width, encoder_width) for _ in self.scales)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.mask_tokens, std=0.02)

    def level_pos_embed(self, level: int) -> Tensor:
        """(1, cells, width) position embeddings of level ``level``'s grid."""
        return pool_grid(self.pos_embed, self.grid_size, self.scales[level])

    def forward(
        self,
        context: Tensor,
        context_idx: Tensor,
        context_pad: Tensor | None,
        queries: Sequence[tuple[Tensor, Tensor | None]],
    ) -> list[Tensor]:
        """Predict every level.

        ``context`` (B, Nc, D_enc): context-encoder tokens at ``context_idx`` (B, Nc) with
        ``context_pad`` (B, Nc, True = padding) or None. ``queries``: per level, ``(idx, pad)`` with
        ``idx`` (B, T, Nq) cell indices on that level's grid and ``pad`` (B, T, Nq) or None.
        Returns per level (B, T, Nq, D_enc).
        """
        if len(queries) != len(self.scales):
            raise ValueError(f"expected {len(self.scales)} query levels, got {len(queries)}")
        b, nc, _ = context.shape
        t = queries[0][0].shape[1]
        pe = self.pos_embed.expand(b, -1, -1)
        x = self.embed(context) + gather_tokens(pe, context_idx)
        x = x.repeat_interleave(t, dim=0)  # (B·T, Nc, W): row b·T + j is image b, target block j
        parts, pads, lengths = [x], [], []
        pads.append(
            context_pad.repeat_interleave(t, dim=0)
            if context_pad is not None
            else torch.zeros(b * t, nc, dtype=torch.bool, device=x.device)
        )
        for level, (idx, pad) in enumerate(queries):
            nq = idx.shape[-1]
            pos = gather_tokens(
                self.level_pos_embed(level).expand(b * t, -1, -1), idx.reshape(b * t, nq)
            )
            parts.append(pos + self.mask_tokens[level].to(pos.dtype))
            pads.append(
                pad.reshape(b * t, nq)
                if pad is not None
                else torch.zeros(b * t, nq, dtype=torch.bool, device=x.device)
            )
            lengths.append(nq)
        seq = torch.cat(parts, dim=1)
        attn_mask = key_padding_mask(torch.cat(pads, dim=1))
        for block in self.blocks:
            seq = block(seq, attn_mask=attn_mask)
        seq = self.norm(seq)
        outs = []
        start = nc
        for level, nq in enumerate(lengths):
            out = self.heads[level](seq[:, start : start + nq])
            outs.append(out.reshape(b, t, nq, -1))
            start += nq
        return outs


def _init_weights(module: nn.Module) -> None:
    """I-JEPA's init: truncated normal (std 0.02) linear weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
