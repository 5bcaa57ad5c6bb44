"""The params schema: unknown keys, ranges, cross-field rules, DVC string floats, read tracking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_stage_subprocess

from hjepa.cli import main as cli_main
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
from hjepa.core.errors import UserError

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


@pytest.mark.slow
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


@pytest.mark.slow
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


# Issue 17: hostile params files get one short paragraph each, from the CLI and from every stage.
HOSTILE = {
    "duplicate_section": (
        b"train:\n  lr: 0.01\nmodel:\n  width: 16\ntrain:\n  epochs: 3\n",
        "line 5: key 'train' appears a second time in the same section (first at line 1)",
    ),
    "nan_lr": (b"train:\n  lr: .nan\n", "train.lr = nan: not a finite number"),
    "inf_mlp_ratio": (b"model:\n  mlp_ratio: .inf\n", "model.mlp_ratio = inf: not a finite number"),
    "inf_in_list": (
        b"probe:\n  c_values: [1.0, -.inf]\n",
        "c_values[1] = -inf: not a finite",
    ),
    "not_utf8": (b"seed: 1\n# caf\xe9\n", "line 2: byte 0xe9 is not UTF-8 text"),
    "self_alias": (
        b"a: &x [*x]\n",
        "line 1: YAML anchors and aliases ('&x' / '*x')",
    ),
    "deep_nesting": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    "nul_byte": (b"seed: 1\x00\n", "line 1: character #x0000 is not allowed in YAML"),
    "python_tag": (b"train: !!python/object:os.system {}\n", "could not determine a constructor"),
    "billion_laughs": (
        b"a: &a [lol, lol, lol]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c]\n",
        "YAML anchors and aliases ('&a' / '*a') are not allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_params_file_gets_a_short_clear_error(tmp_path, case, capsys):
    content, needle = HOSTILE[case]
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError if "not a finite" in needle else UserError) as info:
        load_params(path)
    assert needle in str(info.value)
    assert len(str(info.value).splitlines()) <= 3
    assert cli_main(["params", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_nan_is_not_reported_as_out_of_range():
    with pytest.raises(ConfigError) as info:
        parse_params({"train": {"lr": float("nan")}})
    assert "not a finite number" in str(info.value) and "less than" not in str(info.value)


@pytest.mark.parametrize("stage", ["validate", "prepare", "pretrain", "probe", "report"])
def test_every_stage_refuses_a_hostile_params_file_without_traceback(tmp_path, stage):
    (tmp_path / "params.yaml").write_bytes(HOSTILE["duplicate_section"][0])
    proc = run_stage_subprocess(f"pipeline.{stage}", tmp_path, check=False)
    assert proc.returncode == 2
    assert f"error in stage '{stage}'" in proc.stderr
    assert "appears a second time" in proc.stderr and "Traceback" not in proc.stderr
