"""``hjepa export``: the EMA encoder as a timm model folder (``model.safetensors`` + config)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hjepa.export.timm_export import export_timm

DEFAULT_ENCODER = "models/encoder_ema.pt"


def _run(args: argparse.Namespace) -> int:
    out = export_timm(Path(args.encoder), Path(args.out))
    print(f"wrote {out}/model.safetensors and {out}/config.json")
    print(f'load with: timm.create_model("local-dir:{out}", pretrained=True)')
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write the EMA encoder as model.safetensors + config.json that timm loads",
        description=__doc__,
    )
    parser.add_argument(
        "--encoder", default=DEFAULT_ENCODER, help=f"encoder file (default {DEFAULT_ENCODER})"
    )
    parser.add_argument("--out", required=True, help="folder to write (new or empty)")
    parser.set_defaults(func=_run)
