"""The params schema: unknown keys, ranges, cross-field rules, DVC string floats, read tracking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hjepa.core.config import (
    ConfigError,
    apply_overrides,
    leaf_keys,
    load_params,
    parse_params,
    reads,
    reset_reads,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def error_for(overrides: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(apply_overrides(raw_params(), overrides), "params.yaml")
    return str(info.value)


def test_project_params_file_is_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    # Every leaf of the schema is written out in params.yaml (DVC can only track what is there).
    flat_file = set(leaf_keys(parse_params(raw_params())))
    assert flat_file == set(leaf_keys(params))
    assert "model.layerscale.use_layerscale" in flat_file


def test_typo_names_full_path_and_suggestion():
    raw = raw_params()
    raw["model"]["layerscale"]["use_layer_scale"] = True
    with pytest.raises(ConfigError) as info:
        parse_params(raw, "params.yaml")
    msg = str(info.value)
    assert "model.layerscale.use_layer_scale" in msg
    assert "did you mean 'use_layerscale'" in msg


def test_unknown_top_level_section():
    msg = error_for({"trian.lr": 0.1})
    assert "trian" in msg and "did you mean 'train'" in msg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"train.batch_size": -2}, "train.batch_size = -2"),
        ({"model.drop_path": 1.5}, "model.drop_path = 1.5"),
        ({"data.source": "imagenet"}, "data.source"),
        ({"data.split.train": 0.9}, "sum to 1"),
        ({"model.heads": 3}, "model.heads (3) must divide model.width (128)"),
        (
            {"model.predictor.heads": 3},
            "model.predictor.heads (3) must divide model.predictor.width",
        ),
        (
            {"train.min_lr": 0.5, "train.lr": 0.1},
            "train.min_lr (0.5) must not exceed train.lr (0.1)",
        ),
        ({"data.split.train": 0.9}, "data.split: train + val + test must sum to 1"),
        ({"model.patch_size": 3}, "divisible by model.patch_size"),
        ({"mask.target_scale": [0.3, 0.1]}, "low <= high"),
        ({"ema.momentum_start": 1.0, "ema.momentum_end": 0.99}, "ema.momentum_start (1.0) must"),
        (
            {"model.hierarchy": [{"depth": 9, "scale": 1, "weight": 1.0}]},
            "model.hierarchy[0].depth",
        ),
        ({"data.path": None}, "data.path"),
    ],
)
def test_bad_values_name_key_and_rule(overrides, needle):
    assert needle in error_for(overrides)


def test_scientific_notation_strings_from_dvc_become_floats():
    # `dvc exp run -S train.lr=1e-05` writes 1e-05, which PyYAML reads as the string "1e-05".
    text = "train:\n  lr: 1e-05\n  min_lr: 1e-06\n"
    raw = yaml.safe_load(text)
    assert raw["train"]["lr"] == "1e-05"
    params = parse_params(raw)
    assert params.train.lr == pytest.approx(1e-5) and isinstance(params.train.lr, float)
    params = parse_params({"model": {"layerscale": {"init_value": "1e-05"}}})
    assert params.model.layerscale.init_value == pytest.approx(1e-5)


def test_non_numeric_string_is_rejected():
    assert "train.lr" in error_for({"train.lr": "fast"})


def test_reads_record_leaves_only():
    params = load_params(ROOT / "params.yaml")
    reset_reads()
    _ = params.model.layerscale
    assert reads() == set()
    _ = params.model.layerscale.init_value
    _ = params.model.hierarchy
    _ = params.seed
    assert reads() == {"model.layerscale.init_value", "model.hierarchy", "seed"}
    reset_reads()
    to_dict(params)  # dumping for display is not "reading" a param
    assert reads() == set()


def test_cli_check_exits_2_with_message_and_no_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  layerscale:\n    use_layer_scale: true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hjepa.cli", "params", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "did you mean 'use_layerscale'" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "hjepa.cli", "params", "check", str(ROOT / "params.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


def test_cli_show_prints_defaults(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("seed: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hjepa.cli", "params", "show", str(f)],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = yaml.safe_load(proc.stdout)
    assert shown["seed"] == 3
    assert shown["model"]["layerscale"]["use_layerscale"] is False  # a default filled in


def test_apply_overrides_rejects_value_as_section():
    with pytest.raises(ConfigError, match="'seed' is a value"):
        apply_overrides(raw_params(), {"seed.x": 1})
