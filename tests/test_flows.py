"""The Prefect flows against a real Prefect server started for this session.

Toy stages (a few lines of Python that read the real params.yaml and write files and a metric)
stand in for the real stages where a test is about orchestration, so those tests take seconds;
``test_real_pipeline_*`` runs the project's own dvc.yaml end to end.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
import yaml
from conftest import ROOT, run
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import TaskRunSort
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.experiments import MARKDOWN_KEY, SUMMARY_KEY, TABLE_KEY, hjepa_experiments
from flows.pipeline import hjepa_pipeline
from flows.serve import EXPERIMENTS_DEPLOYMENT, PIPELINE_DEPLOYMENT, build_deployments
from hjepa.integration.dvc_repo import pipeline_stages

pytestmark = pytest.mark.e2e

TOY_SCRIPT = '''"""Toy stages for the flow tests."""
import json, pathlib, sys, time
import yaml

HANG_SEED = 99
WARN_SEED = 3
params = yaml.safe_load(open("params.yaml"))
out = pathlib.Path("toy")
out.mkdir(exist_ok=True)
stage = sys.argv[1]
if stage == "a":
    (out / "a.txt").write_text(str(params["seed"]))
elif stage in ("b", "c"):
    (out / f"{stage}.txt").write_text((out / "a.txt").read_text() + stage)
    if stage == "b" and params["seed"] == HANG_SEED:
        time.sleep(3600)  # a stage that hangs: only the flow's deadline ends it
    if stage == "b" and params["seed"] == WARN_SEED:
        print("WARNING: toy stage b saw the warning seed")
    if stage == "b":
        score = params["seed"] * 10 + int(params["model"]["layerscale"]["use_layerscale"])
        pathlib.Path("metrics").mkdir(exist_ok=True)
        pathlib.Path("metrics/toy.json").write_text(json.dumps({"score": score}))
elif stage == "flaky":
    marker = pathlib.Path("flaky_failed_once")
    if not marker.exists():
        marker.touch()
        sys.exit("flaky: transient failure on the first attempt")
    (out / "flaky.txt").write_text("ok")
'''

# Declared consumer-first: the flow must order them from DVC's graph (a, then c, then b).
TOY_STAGES: dict[str, Any] = {
    "c": {"cmd": "python toy_stage.py c", "deps": ["toy/a.txt"], "outs": ["toy/c.txt"]},
    "b": {
        "cmd": "python toy_stage.py b",
        "deps": ["toy/a.txt", "toy_stage.py"],
        "params": ["seed", "model.layerscale.use_layerscale"],
        "outs": ["toy/b.txt"],
        "metrics": [{"metrics/toy.json": {"cache": False}}],
    },
    "a": {"cmd": "python toy_stage.py a", "params": ["seed"], "outs": ["toy/a.txt"]},
}
FLAKY_STAGE = {"cmd": "python toy_stage.py flaky", "deps": ["toy/a.txt"], "outs": ["toy/flaky.txt"]}


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture
def toy_project(make_project: Callable[..., Path]) -> Callable[..., Path]:
    """``toy_project(extra_stages)``: the project copy with the toy stages as its dvc.yaml."""

    def factory(**extra: dict[str, Any]) -> Path:
        root = make_project()
        (root / "toy_stage.py").write_text(TOY_SCRIPT)
        stages = {**TOY_STAGES, **extra}
        (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
        (root / ".gitignore").write_text("/toy/\n/flaky_failed_once\n")
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-q", "-m", "toy stages"], root)
        return root

    return factory


def _task_runs(flow_run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )


def _wait_for_log(flow_run_id: UUID, message: str, timeout: float = 15.0) -> bool:
    """Whether ``message`` reaches the server's logs of the flow run (logs are sent in batches)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            if any(entry.message == message for entry in logs):
                return True
            time.sleep(0.5)
    return False


def _logs(flow_run_id: UUID, settle: float = 3.0) -> list[tuple[int, str]]:
    """``(level, message)`` of every log line of the run (after ``settle`` s for batching)."""
    time.sleep(settle)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [(entry.level, entry.message) for entry in logs]


def _artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """The run's artifacts by key; tables as lists of rows."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: json.loads(a.data) if a.type == "table" else a.data for a in artifacts}


def _run_pipeline(root: Path, **kw: Any) -> tuple[Any, UUID]:
    state = hjepa_pipeline(project_dir=str(root), return_state=True, **kw)
    return state, state.state_details.flow_run_id


def _in_start_order(task_runs: list[Any]) -> list[str]:
    return [t.name for t in sorted(task_runs, key=lambda t: t.start_time)]


def _wait_for_deployment(name: str, project_dir: str, serve: subprocess.Popen) -> None:
    """Until ``flows.serve`` has registered ``name`` with ``project_dir`` as its default."""
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                if client.read_deployment_by_name(name).parameters == {"project_dir": project_dir}:
                    return
            except ObjectNotFound:
                pass
            time.sleep(0.5)
    raise AssertionError(f"{name} was not registered by flows.serve (exit {serve.poll()})")


def _exp_names(root: Path) -> set[str]:
    doc = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root).stdout)
    return {
        exp["name"] for commit in doc for exp in (commit.get("experiments") or []) if exp["name"]
    }


# -------------------------------------------------------------------------------------- tests
def test_pipeline_flow_runs_stages_in_dag_order_then_skips(
    prefect_server: dict[str, str], toy_project: Callable[..., Path]
) -> None:
    root = toy_project()
    expected = [s.name for s in pipeline_stages(root)]
    assert expected == ["a", "c", "b"]

    state, run_id = _run_pipeline(root)
    assert state.is_completed(), state.message
    assert state.result() == [{"stage": s, "status": "ran"} for s in expected]
    task_runs = _task_runs(run_id)
    assert _in_start_order(task_runs) == expected  # one task run per stage, in dependency order
    assert [t.state.name for t in task_runs] == ["Ran"] * 3  # what DVC did, as the state name
    assert all(t.state.is_completed() for t in task_runs)
    assert all(t.empirical_policy.retry_delay == 5.0 for t in task_runs)  # shown as "5 seconds"
    assert json.loads((root / "metrics" / "toy.json").read_text()) == {"score": 0}
    assert _wait_for_log(run_id, "Running stage 'a':")  # DVC's output is in the run's log

    state, run_id = _run_pipeline(root, retries=0)
    assert state.is_completed(), state.message
    assert state.result() == [{"stage": s, "status": "skipped"} for s in expected]
    assert _in_start_order(_task_runs(run_id)) == expected
    assert [t.state.name for t in _task_runs(run_id)] == ["Skipped"] * 3


def test_pipeline_flow_retries_a_transient_failure(
    prefect_server: dict[str, str], toy_project: Callable[..., Path]
) -> None:
    root = toy_project(flaky=FLAKY_STAGE)
    # Without retries the flaky stage's one failure fails the flow.
    state, run_id = _run_pipeline(root, retries=0)
    assert state.is_failed()
    flaky = next(t for t in _task_runs(run_id) if t.name == "flaky")
    assert flaky.state.is_failed() and flaky.run_count == 1

    (root / "flaky_failed_once").unlink()
    state, run_id = _run_pipeline(root, retries=2, retry_delay_seconds=0.2)
    assert state.is_completed(), state.message
    flaky = next(t for t in _task_runs(run_id) if t.name == "flaky")
    assert flaky.state.is_completed() and flaky.run_count == 2
    assert {"stage": "flaky", "status": "ran"} in state.result()


@pytest.mark.parametrize("jobs", [1, 2])
def test_experiments_flow_runs_override_sets_and_publishes_metrics(
    prefect_server: dict[str, str], toy_project: Callable[..., Path], jobs: int
) -> None:
    root = toy_project()
    params_before = (root / "params.yaml").read_text()
    hierarchy = [{"depth": 2, "scale": 1, "weight": 1.0}]
    overrides = [
        {"model.layerscale.use_layerscale": True},
        {"seed": 3, "model.hierarchy": hierarchy},
    ]
    state = hjepa_experiments(
        overrides=overrides, project_dir=str(root), jobs=jobs, return_state=True
    )
    assert state.is_completed(), state.message
    rows = state.result()
    names = [r["experiment"] for r in rows]
    assert len(names) == 2 and set(names) <= _exp_names(root)
    assert rows[0]["model.layerscale.use_layerscale"] is True and rows[0]["toy.score"] == 1
    assert rows[1]["seed"] == 3 and rows[1]["toy.score"] == 30
    assert rows[1]["model.hierarchy"] == hierarchy  # the list survived -S formatting
    assert (root / "params.yaml").read_text() == params_before  # workspace left alone

    # In the run the user opens: a task run per stage of each experiment, named and stated.
    run_id = state.state_details.flow_run_id
    stage_runs = {t.name: t.state.name for t in _task_runs(run_id) if " · " in t.name}
    assert set(stage_runs) == {f"{n} · {s}" for n in names for s in ("a", "b", "c")}
    assert stage_runs[f"{names[1]} · b"] == "Ran"  # seed 3 changed every stage
    assert set(stage_runs.values()) <= {"Ran", "Skipped", "Restored"}
    logs = _logs(run_id)
    warning = "WARNING: toy stage b saw the warning seed"  # seed 3's stage b prints it
    assert (logging.WARNING, warning) in logs
    assert (logging.INFO, "Running stage 'b':") in logs  # DVC's output, in the stage's log

    artifacts = _artifacts(run_id)
    assert [r["toy.score"] for r in artifacts[TABLE_KEY]] == [1, 30]
    summary = artifacts[SUMMARY_KEY]
    assert list(summary[0]) == [
        "experiment", "status", "model.layerscale.use_layerscale", "seed", "model.hierarchy",
        "linear top-1", "k-NN top-1", "random init (linear)", "gain (linear)",
        "wall time (s)",
    ]  # fmt: skip
    assert [r["experiment"] for r in summary] == names
    assert all(isinstance(r["wall time (s)"], int) for r in summary)
    comparison = artifacts[MARKDOWN_KEY]
    header = next(line for line in comparison.splitlines() if line.startswith("| param"))
    assert header.index(names[0]) < header.index(names[1])  # run order
    metrics = comparison.split("## Metrics")[1]
    assert "`toy.score`" in metrics  # the metric that changed


@pytest.mark.parametrize("jobs", [1, 2])
def test_experiments_flow_stops_a_hanging_experiment_at_its_deadline(
    prefect_server: dict[str, str], toy_project: Callable[..., Path], jobs: int
) -> None:
    root = toy_project()
    started = time.monotonic()
    state = hjepa_experiments(
        overrides=[{"seed": 2}, {"seed": 99}],  # the second one's stage sleeps for an hour
        project_dir=str(root),
        jobs=jobs,
        timeout_minutes=0.5,
        return_state=True,
    )
    elapsed = time.monotonic() - started
    assert state.is_failed()
    assert "1 of 2 experiments failed" in state.message and "(Timeout)" in state.message
    assert elapsed < 30 + 90, elapsed  # the deadline plus stopping and publishing, not the hour
    rows = _artifacts(state.state_details.flow_run_id)[TABLE_KEY]
    assert [(r["seed"], r["status"]) for r in rows] == [(2, "Success"), (99, "Timeout")]
    assert rows[0]["toy.score"] == 20  # the finished experiment's metrics are still published
    assert _toy_stage_processes(root, deadline=time.monotonic() + 20) == []


def _toy_stage_processes(root: Path, deadline: float) -> list[str]:
    """Command lines of toy stages still running in ``root`` (or its DVC temp workspaces),
    waiting until ``deadline`` for them to go."""
    while True:
        alive = []
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cmd, cwd = proc.info["cmdline"] or [], proc.info["cwd"] or ""
            if any("toy_stage.py" in c for c in cmd) and cwd.startswith(str(root.resolve())):
                alive.append(" ".join(cmd))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def test_experiments_flow_fails_fast_on_an_unknown_key(
    prefect_server: dict[str, str], toy_project: Callable[..., Path]
) -> None:
    root = toy_project()
    state = hjepa_experiments(
        overrides=[{"seed": 1}, {"model.layerscale.use_layerscal": True}],
        project_dir=str(root),
        return_state=True,
    )
    assert state.is_failed()
    assert "model.layerscale.use_layerscal" in state.message
    assert "did you mean 'use_layerscale'" in state.message
    assert "\n" not in state.message  # one line
    run_id = state.state_details.flow_run_id
    assert _task_runs(run_id) == []
    assert _exp_names(root) == set()  # not even the valid set ran
    logs = _logs(run_id)
    assert (logging.ERROR, state.message) in logs
    assert not any("Traceback" in message for _, message in logs)


def test_deployments_have_schedule_and_parameter_schema(
    prefect_server: dict[str, str], toy_project: Callable[..., Path]
) -> None:
    root = toy_project()
    for deployment in build_deployments(root, cron="15 3 * * 1", timezone="Europe/Paris"):
        deployment.apply()
    with get_client(sync_client=True) as client:
        pipe = client.read_deployment_by_name(f"hjepa-pipeline/{PIPELINE_DEPLOYMENT}")
        exps = client.read_deployment_by_name(f"hjepa-experiments/{EXPERIMENTS_DEPLOYMENT}")
        pool = client.read_deployment_by_name(f"hjepa-experiments-pool/{EXPERIMENTS_DEPLOYMENT}")
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in pipe.schedules] == [
        ("15 3 * * 1", "Europe/Paris", True)
    ]
    assert pipe.parameters == {"project_dir": str(root)}
    props = pipe.parameter_openapi_schema["properties"]
    assert set(props) == {"project_dir", "retries", "retry_delay_seconds"}
    assert props["retries"]["type"] == "integer" and props["retries"]["minimum"] == 0
    assert props["retry_delay_seconds"]["type"] == "number"

    assert exps.schedules == []
    assert pool.parameters == {"project_dir": str(root)}
    assert pool.parameter_openapi_schema["required"] == ["overrides"]
    schema = exps.parameter_openapi_schema
    assert schema["required"] == ["overrides"]
    assert schema["properties"]["overrides"]["type"] == "array"
    assert schema["properties"]["jobs"]["minimum"] == 1
    timeout = schema["properties"]["timeout_minutes"]
    assert (timeout["exclusiveMinimum"], timeout["maximum"], timeout["default"]) == (0, 10080, 1440)


def _stop_with_ctrl_c(proc: subprocess.Popen) -> tuple[str, bool]:
    """Ctrl-C; returns (output, stopped gracefully). A process that ignores it is killed, so the
    test never hangs; the caller asserts that it did not have to be. (The one cause seen, an
    inherited SIG_IGN from a backgrounded shell, is reset by the caller's ``preexec_fn``.)"""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=45)[0], True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[0], False


def test_serve_cli_registers_and_runs_the_pipeline(
    prefect_server: dict[str, str], toy_project: Callable[..., Path]
) -> None:
    root = toy_project()
    env = {**prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.serve", "--cron", "0 2 * * *", "--project-dir", str(root)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        # A shell that runs the suite in the background (`cmd &`) starts it with SIGINT
        # ignored, and that disposition is inherited: give the server a normal Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    name = f"hjepa-pipeline/{PIPELINE_DEPLOYMENT}"
    try:
        _wait_for_deployment(name, str(root), serve)
        flow_run = run_deployment(name, timeout=120, poll_interval=1)
        assert flow_run.state.is_completed(), flow_run.state.message
        assert _in_start_order(_task_runs(flow_run.id)) == ["a", "c", "b"]
        assert (root / "metrics" / "toy.json").is_file()
    finally:
        output, graceful = _stop_with_ctrl_c(serve)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"], output
    # The server got a normal SIGINT disposition above, so Ctrl-C must stop it gracefully.
    assert graceful, f"flows.serve did not stop on Ctrl-C:\n{output}"
    # pause_on_shutdown=False: stopping the server process leaves the schedule running.
    assert all(s.active for s in deployment.schedules) and not deployment.paused, output


def test_real_pipeline_runs_every_dvc_stage(
    prefect_server: dict[str, str], make_project: Callable[..., Path]
) -> None:
    root = make_project()
    expected = [s.name for s in pipeline_stages(root)]
    state, run_id = _run_pipeline(root, retries=0)
    assert state.is_completed(), state.message
    assert state.result() == [{"stage": s, "status": "ran"} for s in expected]
    assert _in_start_order(_task_runs(run_id)) == expected


def test_real_experiments_layerscale_off_and_on(
    prefect_server: dict[str, str], make_project: Callable[..., Path]
) -> None:
    root = make_project()
    overrides = [
        {"model.layerscale.use_layerscale": False},
        {"model.layerscale.use_layerscale": True},
    ]
    state = hjepa_experiments(overrides=overrides, project_dir=str(root), return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()
    assert [r["model.layerscale.use_layerscale"] for r in rows] == [False, True]
    for row in rows:
        assert 0.0 <= row["probe.linear_top1"] <= 1.0
        assert isinstance(row["pretrain.loss"], float)
