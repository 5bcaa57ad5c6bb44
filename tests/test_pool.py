"""Experiments across machines, for real: a Prefect server, a process work pool, two workers
started as separate processes (each in its own clone, as two machines would have), a bare git
repository as the git remote and a local directory as the DVC remote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import run
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)

import flows.pool
from flows.dvc_run import stop_process_tree
from flows.experiments import MARKDOWN_KEY, TABLE_KEY
from flows.pool import POOL_DEPLOYMENT, hjepa_experiments_pool
from flows.pool_deploy import PROJECT_DIR_ENV

pytestmark = pytest.mark.e2e

POOL = "hjepa-test"
LAYERSCALE = "model.layerscale.use_layerscale"


@pytest.fixture
def pool_project(make_project: Callable[..., Path], tmp_path: Path) -> Path:
    """The project with a local-directory DVC remote, pushed to a bare git repository (the git
    remote every clone shares, as a lab's git server would be)."""
    root = make_project()
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "remote", "add", "--default", "shared", str(tmp_path / "dvc-remote")], root)
    run(["git", "commit", "-q", "-am", "shared DVC remote"], root)
    run(["git", "clone", "-q", "--bare", str(root), str(tmp_path / "origin.git")], tmp_path)
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], root)
    run(["git", "fetch", "-q", "origin"], root)
    return root


def _register_pool(prefect_server: dict[str, str], root: Path) -> None:
    """What a person runs once: ``python -m flows.pool_deploy --pool NAME``."""
    out = subprocess.run(
        [sys.executable, "-m", "flows.pool_deploy", "--pool", POOL],
        cwd=root, env=prefect_server, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and POOL_DEPLOYMENT in out.stdout, out.stdout + out.stderr


@contextlib.contextmanager
def _workers(
    prefect_server: dict[str, str], origin: Path, names: list[str]
) -> Iterator[dict[str, Path]]:
    """One ``prefect worker start`` per name, each in its own fresh clone of ``origin``; all of
    them (with whatever they started) are stopped on exit. Output goes to files: a pipe would be
    held open by the flow-run processes a worker starts."""
    clones: dict[str, Path] = {}
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name in names:
            clone = origin.parent / name
            run(["git", "clone", "-q", str(origin), str(clone)], origin.parent)
            env = {**prefect_server, PROJECT_DIR_ENV: str(clone)}
            env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
            env.pop("PYTHONPATH", None)  # the code comes from the clone, as on another machine
            log = (origin.parent / f"{name}.log").open("w")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "prefect"),
                        "worker",
                        "start",
                        "--pool",
                        POOL,
                        "--type",
                        "process",
                        "--limit",
                        "1",
                        "--name",
                        name,
                    ],
                    cwd=clone,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )
            clones[name] = clone
        _wait_until_online(names, procs)
        yield clones
    finally:
        for proc in procs:
            stop_process_tree(proc.pid, grace_seconds=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def _wait_until_online(names: list[str], procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            online = {w.name for w in client.read_workers_for_work_pool(POOL)}
            if set(names) <= online:
                return
            assert all(p.poll() is None for p in procs), "a worker exited at start"
            time.sleep(0.5)
    raise AssertionError(f"workers {names} not online within 90 s")


def _child_runs(names: list[str]) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names))
        )
    return {r.name: r for r in runs}


def _log_lines(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [entry.message for entry in logs]


def _artifacts(flow_run_id: UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in found}


def _worker_clone(lines: list[str]) -> str:
    (line,) = [line for line in lines if "runs on worker clone" in line]
    return line.rsplit(":", 1)[1]


@pytest.mark.timeout(600)  # the flow's own deadline (5 min) plus its grace and the setup
def test_two_workers_run_two_experiments_and_share_prepare(
    prefect_server: dict[str, str], pool_project: Path
) -> None:
    root = pool_project
    _register_pool(prefect_server, root)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(POOL_DEPLOYMENT)
    assert deployment.work_pool_name == POOL
    assert deployment.pull_steps == [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $" + PROJECT_DIR_ENV + " }}"
            }
        }
    ]

    with _workers(prefect_server, root.parent / "origin.git", ["worker-a", "worker-b"]) as clones:
        started = time.monotonic()
        state = hjepa_experiments_pool(
            overrides=[{LAYERSCALE: False}, {LAYERSCALE: True}],
            project_dir=str(root),
            timeout_minutes=5,
            return_state=True,
        )
        elapsed = time.monotonic() - started
    print(f"\ntwo experiments on two workers: {elapsed:.1f} s", file=sys.stderr)
    assert state.is_completed(), state.message
    rows = state.result()
    names = [r["experiment"] for r in rows]
    assert [(r[LAYERSCALE], r["status"]) for r in rows] == [(False, "Success"), (True, "Success")]
    assert all(0.0 <= r["probe.linear_top1"] <= 1.0 for r in rows)  # metrics pulled back

    shared = names[0].rsplit("-", 1)[0] + "-shared"
    runs = _child_runs([*names, shared])
    logs = {name: _log_lines(run.id) for name, run in runs.items()}
    assert all(run.state.is_completed() for run in runs.values())
    # The two experiments ran at once on different machines (clones).
    where = {name: _worker_clone(logs[name]) for name in names}
    assert set(where.values()) == {str(clones["worker-a"]), str(clones["worker-b"])}
    # prepare ran once, in the shared run; both experiments restored it from the run-cache, so
    # the worker that had not run it pulled it from the DVC remote.
    assert any("Running stage 'prepare'" in line for line in logs[shared])
    for name in names:
        assert not any("Running stage 'prepare'" in line for line in logs[name]), logs[name]
        assert any("Stage 'prepare' is cached" in line for line in logs[name]), logs[name]
        assert any("Running stage 'pretrain'" in line for line in logs[name])

    artifacts = _artifacts(state.state_details.flow_run_id)
    table = artifacts[TABLE_KEY]
    table = json.loads(table) if isinstance(table, str) else table
    assert [r["experiment"] for r in table] == names
    assert all(r["probe.linear_top1"] is not None for r in table)
    assert all(name in artifacts[MARKDOWN_KEY] for name in names)


def test_an_experiment_no_worker_picks_up_times_out(
    prefect_server: dict[str, str], pool_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pool_project
    _register_pool(prefect_server, root)
    monkeypatch.setattr(flows.pool, "STOP_GRACE_SECONDS", 1.0)
    state = hjepa_experiments_pool(
        overrides=[{LAYERSCALE: True}],
        project_dir=str(root),
        timeout_minutes=0.05,
        return_state=True,
    )  # no worker is running
    assert state.is_failed()
    assert "1 of 1 experiments failed" in state.message and "(Timeout)" in state.message
    table = _artifacts(state.state_details.flow_run_id)[TABLE_KEY]
    rows = json.loads(table) if isinstance(table, str) else table
    assert [(r[LAYERSCALE], r["status"]) for r in rows] == [(True, "Timeout")]
    (child,) = _child_runs([rows[0]["experiment"]]).values()
    assert child.state.is_cancelled()  # not left scheduled for a worker that comes later
