"""Fast checks of the flows' building blocks (no Prefect server): DAG reading, DVC output
parsing, override validation and formatting, artifact rows."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run, tiny_params

from flows.dvc_run import DvcCommandError, check_dvc, repro_status, stage_marker, visible_line
from flows.exp_table import comparison_markdown, experiment_rows, summary_rows
from flows.failure import one_line
from flows.overrides import hydra_value, set_param_args, validate_override_sets
from flows.pipeline import repro_task
from flows.serve import main as serve_main
from flows.stage_tasks import StageStream, log_dvc_line
from hjepa.core.config import ConfigError
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import pipeline_stages


def _dvc_repo(path: Path, stages: dict, extra: dict[str, dict] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], path)
    run([sys.executable, "-m", "dvc", "init", "-q"], path)
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for rel, sub_stages in (extra or {}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(yaml.safe_dump({"stages": sub_stages}, sort_keys=False))
    return path


def test_stages_come_from_dvc_graph_in_dependency_order(tmp_path: Path) -> None:
    # Declared consumer-first; ties (c and b both need only a) keep dvc.yaml order.
    repo = _dvc_repo(
        tmp_path / "p",
        {
            "c": {"cmd": "cat a > c", "deps": ["a"], "outs": ["c"]},
            "b": {"cmd": "cat a > b", "deps": ["a"], "outs": ["b"]},
            "d": {"cmd": "cat b c sub/s > d", "deps": ["b", "c", "sub/s"], "outs": ["d"]},
            "a": {"cmd": "echo 1 > a", "outs": ["a"]},
        },
        extra={"sub/dvc.yaml": {"s": {"cmd": "echo s > s", "outs": ["s"]}}},
    )
    stages = pipeline_stages(repo)
    names = [s.name for s in stages]
    assert names.index("a") < names.index("c") < names.index("b") < names.index("d")
    assert names.index("sub/dvc.yaml:s") < names.index("d")
    upstream = {s.name: s.upstream for s in stages}
    assert upstream["a"] == ()
    assert upstream["d"] == ("b", "c", "sub/dvc.yaml:s")


def test_not_a_dvc_project_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a DVC project"):
        pipeline_stages(tmp_path)


def test_repro_status_reads_what_dvc_did() -> None:
    assert repro_status("a", ["Running stage 'a':", "> echo"]) == "ran"
    assert repro_status("a", ["Stage 'a' didn't change, skipping"]) == "skipped"
    assert repro_status("a", ["Stage 'a' is cached - skipping run, checking out outputs"]) == (
        "restored"
    )
    assert repro_status("sub/dvc.yaml:s", ["Running stage 'sub/dvc.yaml:s':"]) == "ran"
    with pytest.raises(ValueError, match="could not tell"):
        repro_status("a", ["Running stage 'ab':", "something else"])


def test_progress_bar_redraws_collapse_to_the_last_one() -> None:
    assert visible_line(b" 10%|#\r 50%|#####\r100%|##########\n") == "100%|##########"
    assert visible_line(b"plain line\r\n") == "plain line"
    assert visible_line(b"\r\n") == ""


def test_failed_dvc_command_raises_with_its_output(tmp_path: Path) -> None:
    repo = _dvc_repo(tmp_path / "p", {"boom": {"cmd": "echo exploding && exit 3"}})
    seen: list[str] = []
    with pytest.raises(DvcCommandError, match="exploding"):
        check_dvc(["repro", "--single-item", "boom"], repo, seen.append)
    assert "exploding" in seen  # streamed line by line to the callback as well


def test_retry_policy_is_one_delay_the_ui_can_show() -> None:
    configured = repro_task(3, 0.5)
    assert configured.retries == 3
    assert configured.retry_delay_seconds == 0.5  # a number: the task page shows "0.5 seconds"
    assert repro_task(0, 5.0).retries == 0


def test_stage_stream_cuts_dvc_output_at_stage_markers() -> None:
    lines = [
        "Reproducing experiment 'x'",
        "Stage 'prepare' didn't change, skipping",
        "Running stage 'pretrain':",
        "> python -m pipeline.pretrain",
        "epoch 1/2",
        "Stage 'probe' is cached - skipping run, checking out outputs",
        "Running stage 'report':",
        "boom",
    ]
    stream = StageStream(lines, lambda: 3)
    assert list(stream.preamble()) == ["Reproducing experiment 'x'"]
    cut = []
    while stream.next_stage is not None:
        stage, status = stream.next_stage
        cut.append((stage, status, list(stream.stage_lines())))
    assert cut == [
        ("prepare", "skipped", ["Stage 'prepare' didn't change, skipping"]),
        ("pretrain", "ran", ["Running stage 'pretrain':", "> python -m pipeline.pretrain",
                             "epoch 1/2"]),
        ("probe", "restored", ["Stage 'probe' is cached - skipping run, checking out outputs"]),
        ("report", "ran", ["Running stage 'report':", "boom"]),
    ]  # fmt: skip
    assert stream.ended and stream.code == 3
    assert stage_marker("Running stage 'sub/dvc.yaml:s':") == ("sub/dvc.yaml:s", "ran")
    assert stage_marker("  not Running stage 'a':") is None


def test_dvc_lines_are_logged_at_the_level_they_announce(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("dvc-lines")
    with caplog.at_level(logging.INFO, logger="dvc-lines"):
        for line in ("WARNING: no better than random init", "warning: x", "ERROR: failed", "ok"):
            log_dvc_line(logger, line)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.WARNING, logging.ERROR, logging.INFO]


def test_a_multi_line_user_error_becomes_one_line() -> None:
    text = "params: 2 invalid parameter(s):\n  - train.x: unknown key\n  - seed = -1: too small"
    assert (
        one_line(text)
        == "params: 2 invalid parameter(s); train.x: unknown key; seed = -1: too small"
    )


def test_hydra_values() -> None:
    assert hydra_value(True) == "true"
    assert hydra_value(False) == "false"
    assert hydra_value(None) == "null"
    assert hydra_value(3) == "3"
    assert hydra_value(1e-5) == "1e-05"
    assert hydra_value("digits") == "'digits'"
    assert hydra_value("it's") == "'it\\'s'"
    assert hydra_value([0.1, 0.2]) == "[0.1,0.2]"
    assert hydra_value([{"depth": 1, "scale": 2}]) == "[{depth:1,scale:2}]"
    with pytest.raises(ConfigError, match="unsupported type"):
        hydra_value(object())


def test_set_param_args_adds_plus_for_keys_not_in_the_file() -> None:
    raw = {"seed": 0, "model": {"layerscale": {"use_layerscale": False}}}
    args = set_param_args(raw, {"model.layerscale.use_layerscale": True, "model.width": 32})
    assert args == ["-S", "model.layerscale.use_layerscale=true", "-S", "+model.width=32"]


def test_override_sets_are_validated_against_the_schema() -> None:
    raw = tiny_params()
    validate_override_sets(raw, [{}, {"model.layerscale.use_layerscale": True}])
    with pytest.raises(ConfigError) as err:
        validate_override_sets(
            raw, [{"seed": 1}, {"model.layerscale.use_layerscal": True}, {"train.lr": 5.0}]
        )
    text = str(err.value)
    assert "override set 1" in text and "model.layerscale.use_layerscal" in text
    assert "did you mean 'use_layerscale'" in text
    assert "override set 2" in text and "train.lr" in text
    assert "override set 0" not in text
    with pytest.raises(ConfigError, match="empty list"):
        validate_override_sets(raw, [])


def _exp(name: str, seed: int, metrics: dict | None) -> dict:
    data = {
        "params": {"params.yaml": {"data": {"seed": seed, "model": {"width": 16}}}},
        "metrics": {"metrics/probe.json": {"data": metrics}} if metrics else {},
    }
    return {"name": name, "revs": [{"rev": f"{name}-rev", "name": name, "data": data}]}


def test_experiment_rows_carry_overridden_params_and_metrics() -> None:
    doc = [
        {"rev": "workspace", "name": None, "data": {"params": {}, "metrics": {}}},
        {
            "rev": "abc",
            "name": "main",
            "data": {"params": {"params.yaml": {"data": {"seed": 0}}}, "metrics": {}},
            "experiments": [
                _exp("old", 9, {"linear_top1": 0.1}),
                _exp("run-1", 1, {"linear_top1": 0.8, "knn": {"top1": 0.7}}),
                _exp("run-2", 2, {"linear_top1": 0.9}),
            ],
        },
    ]
    rows = experiment_rows(
        doc,
        ["run-1", "run-2", "run-3"],
        [{"seed": 1}, {"seed": 2}, {"seed": 3}],
        {"run-1": "Success", "run-2": "Success", "run-3": "Failed"},
    )
    assert [r["experiment"] for r in rows] == ["run-1", "run-2", "run-3"]
    assert rows[0] == {
        "experiment": "run-1",
        "status": "Success",
        "seed": 1,
        "probe.linear_top1": 0.8,
        "probe.knn.top1": 0.7,
    }
    assert rows[1]["probe.knn.top1"] is None and rows[1]["probe.linear_top1"] == 0.9
    assert rows[2]["status"] == "Failed" and rows[2]["probe.linear_top1"] is None
    assert rows[2]["seed"] == 3  # DVC has no results of run-3: the row says what it was asked
    text = comparison_markdown(doc, ["run-2", "run-1"])
    assert "run-1" in text and "run-2" in text and "old" not in text
    header = next(line for line in text.splitlines() if line.startswith("| param"))
    assert header.index("main") < header.index("run-2") < header.index("run-1")  # run order
    changed, _, same = text.partition("## Metrics that are the same in every experiment")
    assert "`probe.linear_top1`" in changed.split("## Metrics")[1]
    assert "`probe.knn.top1`" not in same  # only run-1 has it: it differs

    summary = summary_rows(rows, [{"seed": 1}, {"seed": 2}, {"seed": 3}])
    assert list(summary[0]) == [
        "experiment", "status", "seed", "linear top-1", "k-NN top-1",
        "random init (linear)", "gain (linear)", "wall time (s)",
    ]  # fmt: skip
    assert summary[0]["linear top-1"] == 80.0 and summary[2]["linear top-1"] is None


def test_serve_rejects_a_bad_cron(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo = _dvc_repo(tmp_path / "p", {"a": {"cmd": "echo 1 > a", "outs": ["a"]}})
    assert serve_main(["--cron", "every night", "--project-dir", str(repo)]) == 2
    assert "--cron 'every night'" in capsys.readouterr().err
    assert serve_main(["--project-dir", str(tmp_path)]) == 2
    assert "not a DVC project" in capsys.readouterr().err
