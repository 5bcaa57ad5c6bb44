"""The EMA encoder as a timm model folder: ``model.safetensors`` + ``config.json``.

Why: downstream users should not need this project to use the weights. Our ``Encoder`` keeps
timm's ``VisionTransformer`` inside (``vit.*``) and only adds its own position embedding and
token routing; with every token kept it computes exactly what a plain timm ViT without class
token computes, given our position embedding as timm's ``pos_embed``. So the export renames the
keys (``vit.`` dropped, ``pos_embed`` moved in) and writes timm's Hugging Face folder layout, which
``timm.create_model("local-dir:<folder>", pretrained=True)`` reads as it is; ``config.json``'s
``model_args`` are also the keyword arguments for ``timm.create_model(<architecture>, ...)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from hjepa.core.errors import UserError
from hjepa.core.io import atomic_dir
from hjepa.core.transforms import MEAN, STD
from hjepa.models.encoder import Encoder, load_encoder

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Any registered timm ViT name: its own defaults are all overridden by ``model_args``.
ARCHITECTURE = "vit_base_patch16_224"


def timm_model_args(arch: dict[str, Any]) -> dict[str, Any]:
    """timm ``VisionTransformer`` keyword arguments for our encoder architecture.

    No class token and no classifier; ``global_pool="avg"`` with ``fc_norm=False`` makes the
    model's output the mean of the final-norm tokens, the probe's feature (``pool_grid`` 1).
    """
    init = arch["layerscale_init"]
    return {
        "img_size": int(arch["img_size"]),
        "patch_size": int(arch["patch_size"]),
        "in_chans": int(arch["in_chans"]),
        "embed_dim": int(arch["width"]),
        "depth": int(arch["depth"]),
        "num_heads": int(arch["heads"]),
        "mlp_ratio": float(arch["mlp_ratio"]),
        "init_values": None if init is None else float(init),
        "class_token": False,
        "global_pool": "avg",
        "fc_norm": False,
        "num_classes": 0,
    }


def timm_state_dict(encoder: Encoder) -> dict[str, Tensor]:
    """Our encoder's weights under timm's key names (contiguous copies, as safetensors needs)."""
    out = {}
    for key, value in encoder.state_dict().items():
        name = key.removeprefix("vit.")
        out[name] = value.detach().cpu().contiguous().clone()
    return out


def timm_config(encoder: Encoder) -> dict[str, Any]:
    """``config.json`` in timm's Hugging Face layout (architecture, model_args, pretrained_cfg)."""
    args = timm_model_args(encoder.arch)
    channels, size = args["in_chans"], args["img_size"]
    return {
        "architecture": ARCHITECTURE,
        "num_classes": 0,
        "num_features": args["embed_dim"],
        "global_pool": "avg",
        "model_args": args,
        "pretrained_cfg": {
            "input_size": [channels, size, size],
            "mean": [MEAN] * channels,
            "std": [STD] * channels,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "num_classes": 0,
            "license": "same as the data it was trained on",
        },
        "hjepa": {"arch": dict(encoder.arch)},
    }


def export_timm(encoder_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json`` (the folder atomically).

    ``out_dir`` is replaced as a whole, so a folder holding anything else is refused.
    """
    encoder = load_encoder(encoder_path)
    out = Path(out_dir)
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir()) if out.is_dir() else [out.name]
        foreign = [name for name in foreign if name not in (WEIGHTS_FILE, CONFIG_FILE)]
        if foreign:
            raise UserError(
                f"{out}: holds other files ({', '.join(foreign[:5])}); the export replaces the "
                "whole folder, so give a new or empty one, e.g. --out export/timm"
            )
    with atomic_dir(out) as tmp:
        save_file(timm_state_dict(encoder), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(timm_config(encoder), indent=2) + "\n")
    return out
