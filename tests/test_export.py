"""``hjepa export``: timm alone loads the exported encoder and computes the same features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import tiny_params
from safetensors.torch import load_file

from hjepa.cli import main
from hjepa.core.config import parse_params
from hjepa.models.encoder import build_encoder, encoder_arch, save_encoder


def _timm_from_config(folder: Path) -> torch.nn.Module:
    """What a downstream user writes, with the documented arguments; no hjepa code."""
    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))  # strict
    return model.eval()


def _timm_from_folder(folder: Path) -> torch.nn.Module:
    """timm's own loader for a local Hugging Face style folder."""
    return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.layerscale.use_layerscale": True, "model.pos_embed": "learned"},
        {"model.layerscale.use_layerscale": False, "model.pos_embed": "sincos", "data.channels": 3},
    ],
)
def test_timm_loads_the_export_and_gives_the_same_features(
    tmp_path: Path, overrides: dict, capsys: pytest.CaptureFixture
) -> None:
    torch.manual_seed(0)
    params = parse_params(tiny_params(**overrides))
    encoder = build_encoder(encoder_arch(params.model, params.data)).eval()
    with torch.no_grad():  # move every weight off its init (LayerScale gammas included)
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_encoder(tmp_path / "encoder_ema.pt", encoder)

    out = tmp_path / "export"
    assert main(["export", "--encoder", str(tmp_path / "encoder_ema.pt"), "--out", str(out)]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]

    c, size = params.data.channels, params.data.image_size
    images = torch.randn(5, c, size, size)
    with torch.no_grad():
        tokens = encoder(images).tokens
        for model in (_timm_from_config(out), _timm_from_folder(out)):
            assert (model.forward_features(images) - tokens).abs().max() <= 1e-5
            assert (model(images) - tokens.mean(dim=1)).abs().max() <= 1e-5  # probe feature


def test_export_refuses_a_folder_with_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny = parse_params(tiny_params())
    encoder = build_encoder(encoder_arch(tiny.model, tiny.data))
    save_encoder(tmp_path / "enc.pt", encoder)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert (
        main(["export", "--encoder", str(tmp_path / "enc.pt"), "--out", str(tmp_path / "out")]) == 2
    )
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
