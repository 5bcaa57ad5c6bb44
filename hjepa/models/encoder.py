"""The ViT encoder: timm's ``VisionTransformer`` blocks, our own token routing.

Why a wrapper rather than timm's ``forward``: I-JEPA's context encoder must see only the context
tokens (masked tokens are *dropped*, not zeroed: that is most of its compute saving), per-image
context sizes need an attention mask over padding, and the hierarchical targets need the raw
output of intermediate blocks. timm still owns everything inside a block, so LayerScale is timm's
own ``init_values`` (``ls1``/``ls2`` ``gamma`` in every block) and stochastic depth is timm's
``DropPath``; both stay on together (the codebase this replaces silently dropped one for the
other).

The architecture travels with the weights as a plain JSON-able dict (``encoder_arch``), so the
probe can rebuild the encoder from ``models/encoder_ema.pt`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from hjepa.core.config import DataParams, ModelParams
from hjepa.core.errors import UserError
from hjepa.core.torch_io import save_torch

__all__ = [
    "ENCODER_FORMAT",
    "Encoder",
    "EncoderOutput",
    "build_encoder",
    "count_parameters",
    "encoder_arch",
    "gather_tokens",
    "load_encoder",
    "save_encoder",
    "sincos_pos_embed",
]

ENCODER_FORMAT = "hjepa-encoder/1"
ARCH_KEYS = (
    "img_size",
    "patch_size",
    "in_chans",
    "width",
    "depth",
    "heads",
    "mlp_ratio",
    "drop_path",
    "pos_embed",
    "layerscale_init",
    "hierarchy_depths",
)
POS_EMBED_KINDS = ("sincos", "learned")


def encoder_arch(model: ModelParams, data: DataParams) -> dict[str, Any]:
    """The encoder's architecture as a JSON-able dict (saved beside its weights).

    ``layerscale_init`` is ``None`` when LayerScale is off; ``hierarchy_depths`` is metadata for
    the probe (which block outputs the targets were taken from).
    """
    m = model
    ls = m.layerscale
    # Read both LayerScale keys unconditionally: the stage that builds the model declares both,
    # and `hjepa dag check` would (rightly) flag a key that is only read some of the time.
    use_layerscale, init_value = ls.use_layerscale, ls.init_value
    return {
        "img_size": data.image_size,
        "patch_size": m.patch_size,
        "in_chans": data.channels,
        "width": m.width,
        "depth": m.depth,
        "heads": m.heads,
        "mlp_ratio": m.mlp_ratio,
        "drop_path": m.drop_path,
        "pos_embed": m.pos_embed,
        "layerscale_init": init_value if use_layerscale else None,
        "hierarchy_depths": [level.depth for level in m.hierarchy],
    }


def sincos_pos_embed(dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding, (grid_size², dim), row-major token order (MAE/I-JEPA).

    A quarter of the channels each for sin/cos of the column and of the row; channels left over
    when ``dim`` is not a multiple of 4 are zero.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64),
        torch.arange(grid_size, dtype=torch.float64),
        indexing="ij",
    )
    out_c = cols.reshape(-1, 1) * omega.reshape(1, -1)
    out_r = rows.reshape(-1, 1) * omega.reshape(1, -1)
    emb = torch.cat([out_c.sin(), out_c.cos(), out_r.sin(), out_r.cos()], dim=1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=1)
    return emb.float()


def make_pos_embed(kind: str, dim: int, grid_size: int) -> Tensor:
    """(1, grid², dim) initial position embedding: fixed sin-cos, or small random (learned)."""
    if kind == "sincos":
        return sincos_pos_embed(dim, grid_size).unsqueeze(0)
    if kind == "learned":
        pe = torch.empty(1, grid_size * grid_size, dim)
        nn.init.trunc_normal_(pe, std=0.02)
        return pe
    raise UserError(f"model.pos_embed = {kind!r}; allowed: {', '.join(POS_EMBED_KINDS)}")


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Tokens of ``x`` (B, N, D) at ``idx`` (B, ...) → (B, ..., D)."""
    b, _, d = x.shape
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, d))
    return out.reshape(*idx.shape, d)


def key_padding_mask(pad: Tensor | None) -> Tensor | None:
    """SDPA boolean mask (True = may attend) hiding padded keys: (B, 1, 1, N) from (B, N)."""
    if pad is None:
        return None
    return (~pad)[:, None, None, :]


@dataclass
class EncoderOutput:
    """``tokens``: last block after the final norm; ``blocks``: 1-based depth → raw block output."""

    tokens: Tensor
    blocks: dict[int, Tensor]


class Encoder(nn.Module):
    """ViT encoder over a (possibly subsampled) set of patch tokens; no class token."""

    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.arch = dict(arch)
        img, patch = int(arch["img_size"]), int(arch["patch_size"])
        self.grid_size = img // patch
        self.num_tokens = self.grid_size**2
        self.width = int(arch["width"])
        self.depth = int(arch["depth"])
        init = arch["layerscale_init"]
        self.vit = VisionTransformer(
            img_size=img,
            patch_size=patch,
            in_chans=int(arch["in_chans"]),
            num_classes=0,
            global_pool="",
            embed_dim=self.width,
            depth=self.depth,
            num_heads=int(arch["heads"]),
            mlp_ratio=float(arch["mlp_ratio"]),
            init_values=None if init is None else float(init),
            class_token=False,
            pos_embed="none",  # ours below: sin-cos or learned, gathered with the tokens
            drop_path_rate=float(arch["drop_path"]),
        )
        for block in self.vit.blocks:
            block.attn.fused_attn = True  # type: ignore[union-attr]  # SDPA: flash / memory-efficient kernels on CUDA
        pe = make_pos_embed(str(arch["pos_embed"]), self.width, self.grid_size)
        if arch["pos_embed"] == "learned":
            self.pos_embed = nn.Parameter(pe)
        else:
            self.register_buffer("pos_embed", pe)

    def forward(
        self,
        images: Tensor,
        keep_idx: Tensor | None = None,
        pad_mask: Tensor | None = None,
        return_blocks: Sequence[int] = (),
    ) -> EncoderOutput:
        """Encode ``images`` (B, C, H, W).

        ``keep_idx`` (B, N_kept) selects the tokens that enter the blocks (row-major grid
        indices); the others are never computed. ``pad_mask`` (B, N_kept), True = padding: those
        tokens are hidden from attention (their own outputs are meaningless). ``return_blocks``:
        1-based block depths whose raw outputs are returned.
        """
        wanted = set(return_blocks)
        bad = sorted(d for d in wanted if not 1 <= d <= self.depth)
        if bad:
            raise ValueError(f"return_blocks {bad} outside 1..{self.depth}")
        x = self.vit.patch_embed(images) + self.pos_embed
        if keep_idx is not None:
            x = gather_tokens(x, keep_idx)
        attn_mask = key_padding_mask(pad_mask)
        blocks: dict[int, Tensor] = {}
        for depth, block in enumerate(self.vit.blocks, start=1):
            x = block(x, attn_mask=attn_mask)
            if depth in wanted:
                blocks[depth] = x
        return EncoderOutput(tokens=self.vit.norm(x), blocks=blocks)


def build_encoder(arch: dict[str, Any]) -> Encoder:
    """An encoder for ``arch`` (see ``encoder_arch``); ValueError naming missing keys."""
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"encoder arch lacks {', '.join(missing)}")
    return Encoder(arch)


def save_encoder(path: str | Path, encoder: Encoder, extra: dict[str, Any] | None = None) -> None:
    """Write ``{"format", "arch", "state_dict", "extra"}`` atomically (loadable weights-only);
    the same weights and extra always give the same bytes (hjepa.core.torch_io)."""
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    payload = {
        "format": ENCODER_FORMAT,
        "arch": dict(encoder.arch),
        "state_dict": state,
        "extra": dict(extra or {}),
    }
    save_torch(path, payload)


def load_encoder(path: str | Path) -> Encoder:
    """Rebuild an encoder saved by ``save_encoder``; UserError if missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: encoder file not found (run the pretrain stage first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not our file"
        raise UserError(
            f"{path}: not a readable encoder file ({type(exc).__name__}: {exc}); "
            "delete it and rerun the pretrain stage"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise UserError(
            f"{path}: expected an encoder file of format '{ENCODER_FORMAT}', found {found!r}"
        )
    arch = payload.get("arch")
    missing = [k for k in ARCH_KEYS if not isinstance(arch, dict) or k not in arch]
    if missing:
        raise UserError(f"{path}: encoder architecture lacks {', '.join(missing)}")
    assert isinstance(arch, dict)  # checked just above
    encoder = Encoder(arch)
    try:
        encoder.load_state_dict(payload.get("state_dict") or {})
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the saved architecture: {exc}") from None
    return encoder


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
