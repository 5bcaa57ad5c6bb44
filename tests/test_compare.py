"""``hjepa compare``: changed params and metric deltas, from metrics dirs and from the real
``dvc exp show --json`` format (DVC 3.67), including failed rows and any number of experiments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import run

from hjepa.cli import main
from hjepa.core.errors import UserError
from hjepa.integration.compare import experiments_from_exp_show, experiments_from_paths


def _rev(rev: str, name: str | None, lr: float, top1: float) -> dict:
    return {
        "rev": rev,
        "name": name,
        "data": {
            "rev": rev,
            "timestamp": "2026-11-26T01:56:24",
            "params": {"params.yaml": {"data": {"seed": 0, "train": {"lr": lr, "epochs": 2}}}},
            "metrics": {
                "metrics/probe.json": {
                    "data": {"linear_top1": top1, "random_init": {"linear_top1": 0.3}}
                },
                "metrics/pretrain.json": {
                    "error": {"type": "FileNotFoundError", "msg": "[Errno 2] No such file"}
                },
            },
            "deps": {},
            "outs": {},
            "meta": {},
        },
        "error": None,
        "experiments": None,
    }


# Shape copied from a real `dvc exp show --json` (DVC 3.67.1); a failed experiment added.
EXP_SHOW = [
    {**_rev("workspace", None, 0.5, 0.1), "name": None},
    {
        **_rev("8fc367cf8b01ee9008f337c26841980898850313", "main", 0.1, 0.6),
        "experiments": [
            {
                "revs": [_rev("213f0656e5206cd02243a2975991e7bc01e339be", "lr02", 0.2, 0.7)],
                "executor": None,
                "name": "lr02",
            },
            {
                "revs": [{"rev": "aaaa", "name": "broken", "data": None, "error": {"msg": "x"}}],
                "executor": "workspace",
                "name": "broken",
            },
            {"revs": [_rev("bbbb", None, 0.05, 0.55)], "executor": None, "name": "lr005"},
        ],
    },
]


def test_exp_show_parsing_skips_workspace_and_failures():
    exps = experiments_from_exp_show(EXP_SHOW)
    assert [e.name for e in exps] == ["main", "lr02", "lr005"]
    assert exps[1].params["train.lr"] == 0.2
    assert exps[1].metrics == {"probe.linear_top1": 0.7, "probe.random_init.linear_top1": 0.3}
    with_ws = experiments_from_exp_show(EXP_SHOW, include_workspace=True)
    assert with_ws[0].name == "workspace"
    with pytest.raises(UserError, match="expected a JSON list"):
        experiments_from_exp_show({"not": "a list"})


def test_cli_compare_from_saved_exp_show(tmp_path, capsys):
    src = tmp_path / "exp.json"
    src.write_text(json.dumps(EXP_SHOW))
    out = tmp_path / "compare.md"
    code = main(
        ["compare", "--exp-json", str(src), "--out", str(out), "--figures", str(tmp_path / "f")]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert text.strip() == out.read_text().strip()
    assert "| `train.lr` | 0.1 | 0.2 | 0.05 |" in text
    assert "| `probe.linear_top1` | 0.6 | 0.7 (+0.1) | 0.55 (-0.05) |" in text
    assert "`seed`" not in text.split("## Metrics")[0]  # unchanged params are not listed
    assert "Pretraining loss" not in text  # no logs for these revisions: no figure promised


def _metrics_dir(root: Path, lr: float, top1: float, with_log: bool) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "params.yaml").write_text(f"seed: 0\ntrain:\n  lr: {lr}\n  epochs: 2\n")
    (root / "metrics" / "probe.json").write_text(
        json.dumps({"linear_top1": top1, "features": "last", "per_class": {"a": top1}})
    )
    if with_log:
        log = "step\tloss\n0\t1.0\n1\t0.5\n2\t0.25\n"
        (root / "metrics" / "pretrain_log.tsv").write_text(log)
    return root


def test_compare_metrics_dirs_lists_changed_param_delta_and_curves(tmp_path, capsys):
    a = _metrics_dir(tmp_path / "a", 0.001, 0.9, with_log=True)
    b = _metrics_dir(tmp_path / "b", 0.003, 0.93, with_log=True)
    c = _metrics_dir(tmp_path / "c", 0.001, 0.8, with_log=False)
    out = tmp_path / "reports" / "compare.md"
    figs = tmp_path / "reports" / "compare_figures"
    argv = ["compare", str(a), str(b / "metrics"), str(c / "metrics" / "probe.json")]
    assert main([*argv, "--out", str(out), "--figures", str(figs)]) == 0
    text = out.read_text()
    assert "| `train.lr` | 0.001 | 0.003 | 0.001 |" in text
    assert "| `probe.linear_top1` | 0.9 | 0.93 (+0.03) | 0.8 (-0.1) |" in text
    assert "`probe.per_class.a`" in text
    png = figs / "compare_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert "(compare_figures/compare_loss.png)" in text
    assert experiments_from_paths([c])[0].log is None


def test_compare_missing_path_is_a_user_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "x.md")]) == 2
    assert "no such metrics file or directory" in capsys.readouterr().err


@pytest.mark.e2e
def test_compare_runs_dvc_exp_show_on_real_experiments(tmp_path, capsys):
    """A throw-away DVC project with two real experiments; curves come from the exp git refs."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "params.yaml").write_text("seed: 0\ntrain:\n  lr: 0.1\n")
    (proj / "run.py").write_text(
        "import json, os, yaml\n"
        "p = yaml.safe_load(open('params.yaml'))\n"
        "os.makedirs('metrics', exist_ok=True)\n"
        "json.dump({'linear_top1': 0.5 + p['train']['lr']}, open('metrics/probe.json', 'w'))\n"
        "open('metrics/pretrain_log.tsv', 'w').write('step\\tloss\\n0\\t1\\n1\\t%s\\n' "
        "% p['train']['lr'])\n"
    )
    (proj / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: python run.py\n    deps: [run.py]\n    params: [train.lr]\n"
        "    metrics:\n      - metrics/probe.json: {cache: false}\n"
        "    outs:\n      - metrics/pretrain_log.tsv: {cache: false}\n"
    )
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q", "-b", "main"], proj)
    run([*dvc, "init", "-q"], proj)
    run([*dvc, "repro", "-q"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-q", "-m", "base"], proj)
    run([*dvc, "exp", "run", "-q", "-S", "train.lr=0.3", "-n", "lr03"], proj)
    out = tmp_path / "compare.md"
    argv = ["compare", "--project", str(proj), "--out", str(out)]
    assert main([*argv, "--figures", str(tmp_path / "figs")]) == 0
    text = out.read_text()
    assert "| `train.lr` | 0.1 | 0.3 |" in text
    assert "| `probe.linear_top1` | 0.6 | 0.8 (+0.2) |" in text
    assert (tmp_path / "figs" / "compare_loss.png").stat().st_size > 2000
