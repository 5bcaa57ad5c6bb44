"""The report: every section present, figures real PNGs, LayerScale figure only with gamma data,
no per-key params reads recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, tiny_params

from hjepa.core.config import parse_params, reads, reset_reads, to_dict
from hjepa.core.errors import UserError
from hjepa.report import build_report
from hjepa.report.build import FIGURE_NAMES, encoder_param_count

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fake_metrics(root: Path, gammas: bool, inv_loss: float | None = None) -> None:
    m = root / "metrics"
    m.mkdir(parents=True)
    (m / "data.json").write_text(json.dumps({"num_classes": 3, "train": 30, "test": 6}))
    (m / "pretrain.json").write_text(
        json.dumps(
            {
                "loss": 0.12,
                "loss_level_0": 0.1,
                "loss_level_1": 0.14,
                "epochs": 2,
                "steps": 6,
                "wall_time_s": 3.5,
                "images_per_s": 812.0,
                "target_std": 0.9,
                "layerscale": gammas,
            }
        )
    )
    cols = ["epoch", "step", "loss", "loss_level_0", "loss_level_1", "lr", "weight_decay"]
    cols += ["ema_momentum", "target_std", "reg_loss", "images_per_s"]
    if inv_loss is not None:
        cols += ["inv_loss"]
    if gammas:
        cols += ["gamma_ctx_block1", "gamma_ctx_block2", "gamma_tgt_block1", "gamma_tgt_block2"]
    rows = ["\t".join(cols)]
    for step in range(6):
        vals = [step // 3, step, 1 / (step + 1)] + [0.5 / (step + 1)] * (len(cols) - 3)
        if inv_loss is not None:
            vals[cols.index("inv_loss")] = inv_loss
        rows.append("\t".join(str(v) for v in vals))
    (m / "pretrain_log.tsv").write_text("\n".join(rows) + "\n")
    (m / "probe.json").write_text(
        json.dumps(
            {
                "linear_top1": 0.9,
                "knn_top1": 0.8,
                "random_init": {"linear_top1": 0.7, "knn_top1": 0.5},
                "pixels": {
                    "linear_top1": 0.95,
                    "knn_top1": 0.93,
                    "knn_top1_plain": 0.97,
                    "dims": 512,
                    "raw_dims": 3072,
                },
                "gain_over_random_init": 0.2,
                "best_c": 1.0,
                "features": "last",
                "pool_grid": 2,
                "feature_dim": 64,
                "knn_pool_grid": 1,
                "knn_feature_dim": 16,
                "per_class": {"cat": 1.0, "dog": 0.5, "emu": None},
            }
        )
    )
    (m / "confusion.csv").write_text("actual,predicted\ncat,cat\ncat,cat\ndog,cat\ndog,dog\n")


def _params(**overrides) -> dict:
    return to_dict(parse_params(tiny_params(**overrides)))


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_SIGNATURE and len(data) > 2000


def test_report_has_every_section_and_real_figures(tmp_path):
    _fake_metrics(tmp_path, gammas=True)
    ls = {"model.layerscale.use_layerscale": True, "model.layerscale.init_value": 1e-4}
    params = _params(**ls)
    out = tmp_path / "reports" / "report.md"
    figs = build_report(tmp_path, out, tmp_path / "reports" / "figures", params=params)
    text = out.read_text()
    headings = (
        "## Results",
        "## Pretraining",
        "### Schedules",
        "### LayerScale",
        "## Evaluation details",
        "### Per-class linear-probe accuracy",
        "### Confusion matrix",
        "## Throughput and wall time",
        "## What was run",
        "### Model",
        "### Data",
        "## Resolved parameters",
    )
    at = [text.find(h) for h in headings]
    assert all(i >= 0 for i in at), [h for h, i in zip(headings, at, strict=True) if i < 0]
    assert at == sorted(at), "the report opens with the results and ends with the params"
    results = text[text.find("## Results") : text.find("## Pretraining")]
    assert "| raw pixels |" in results and "loss curves" in results
    assert "| LayerScale | on, init 0.0001 |" in text
    assert "| raw pixels | 95.00% | 93.00% |" in text
    assert "| raw pixels, plain k-NN | — | 97.00% |" in results  # the stricter pixel k-NN
    assert "| pixel baseline | 3072 pixels, randomly projected to 512 dims" in text
    assert "+20.00 points" in text
    assert "| `model.width`" not in text and "| model.width | 16 |" in text
    assert "| wall_time_s | 3.5 |" in text
    assert "| regulariser (VICReg, weighted) | — | 0.08333 |" in text
    assert "| emu | — |" in text
    assert (
        "| pooling | linear: means of 2×2 spatial cells (64-d); "
        "k-NN: global mean of the tokens (16-d) |" in text
    )
    for key, name in FIGURE_NAMES.items():
        path = tmp_path / "reports" / "figures" / name
        assert figs[key] == path and _is_png(path), name
        assert f"(figures/{name})" in text


def test_layerscale_off_has_no_gamma_figure_and_removes_stale_one(tmp_path):
    _fake_metrics(tmp_path, gammas=False)
    fig_dir = tmp_path / "reports" / "figures"
    fig_dir.mkdir(parents=True)
    stale = fig_dir / FIGURE_NAMES["gammas"]
    stale.write_bytes(PNG_SIGNATURE)
    figs = build_report(tmp_path, tmp_path / "reports" / "report.md", fig_dir, params=_params())
    text = (tmp_path / "reports" / "report.md").read_text()
    assert figs["gammas"] is None and not stale.exists()
    assert "| LayerScale | off |" in text
    assert "LayerScale is off" in text and FIGURE_NAMES["gammas"] not in text


@pytest.mark.parametrize("inv_loss", [None, 0.0, 0.25])
def test_invariance_row_only_when_the_run_had_the_term(tmp_path, inv_loss):
    _fake_metrics(tmp_path, gammas=False, inv_loss=inv_loss)
    build_report(tmp_path, tmp_path / "r.md", tmp_path / "figs", params=_params())
    text = (tmp_path / "r.md").read_text()
    row = "| two-view invariance (unweighted) | — | 0.25 |"
    assert (row in text) == (inv_loss == 0.25)
    assert ("two-view invariance" in text) == (inv_loss == 0.25)


def test_warning_in_report_when_no_gain(tmp_path):
    _fake_metrics(tmp_path, gammas=False)
    probe = json.loads((tmp_path / "metrics" / "probe.json").read_text())
    probe["gain_over_random_init"] = -0.01
    (tmp_path / "metrics" / "probe.json").write_text(json.dumps(probe))
    build_report(tmp_path, tmp_path / "r.md", tmp_path / "figs", params=_params())
    assert "does not beat its random init" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize(
    "block, expected",
    [
        (None, None),
        ({"detected": False, "reason": None, "epoch": None, "effective_rank": 54.4}, None),
        (
            {"detected": True, "reason": "low_rank", "epoch": 2, "effective_rank": 4.2,
             "best_effective_rank": 5.1, "width": 128, "threshold": 6.4},
            "In epoch 2 of 2 the effective rank of the pooled features was 4.2 of 128, below the "
            "threshold of 6.4",
        ),
        (
            {"detected": True, "reason": "falling", "epoch": 2, "effective_rank": 9.0,
             "best_effective_rank": 45.0, "width": 128, "threshold": 6.4},
            "had fallen to 9.0 of 128, below a quarter of its best so far (45.0)",
        ),
    ],
)  # fmt: skip
def test_collapse_warning_near_the_top_only_when_detected(tmp_path, block, expected):
    _fake_metrics(tmp_path, gammas=False)
    path = tmp_path / "metrics" / "pretrain.json"
    pretrain = json.loads(path.read_text())
    if block is not None:
        pretrain["collapse"] = block
    path.write_text(json.dumps(pretrain))
    build_report(tmp_path, tmp_path / "r.md", tmp_path / "figs", params=_params())
    text = (tmp_path / "r.md").read_text()
    assert ("dimensional collapse" in text) == (expected is not None)
    if expected is not None:
        head = text[: text.index("## What was run")]
        assert "> **Warning: dimensional collapse.**" in head and expected in head


def test_missing_input_is_a_user_error_naming_the_file(tmp_path):
    _fake_metrics(tmp_path, gammas=False)
    (tmp_path / "metrics" / "probe.json").unlink()
    with pytest.raises(UserError, match=r"metrics/probe.json: not found"):
        build_report(tmp_path, tmp_path / "r.md", tmp_path / "figs", params=_params())
    assert not (tmp_path / "r.md").exists()


def test_report_stage_records_no_param_reads(tmp_path, monkeypatch):
    """The report's DVC dep is the whole params.yaml; it must not count as reading any key."""
    _fake_metrics(tmp_path, gammas=False)
    (tmp_path / "params.yaml").write_text(json.dumps(tiny_params()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delenv("HJEPA_PARAMS", raising=False)
    from pipeline import report as report_stage
    from pipeline._stage import run_stage

    reset_reads()
    run_stage("report", report_stage.body)
    assert reads() == set()
    assert json.loads((tmp_path / "params_read" / "report.json").read_text())["params"] == []
    assert "## Results" in (tmp_path / "reports" / "report.md").read_text()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.layerscale.use_layerscale": True, "model.pos_embed": "learned"},
        {"model.mlp_ratio": 3.0, "data.channels": 3},
    ],
)
def test_param_count_matches_the_built_encoder(overrides):
    from hjepa.models.encoder import build_encoder, count_parameters, encoder_arch

    raw = tiny_params(**overrides)
    parsed = parse_params(raw)
    built = build_encoder(encoder_arch(parsed.model, parsed.data))
    assert encoder_param_count(_params(**overrides)) == count_parameters(built)
