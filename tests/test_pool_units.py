"""Fast checks of the work-pool pieces (no Prefect server): which stages are shared, how a child
run's state becomes a status, the git checks around a worker's clone, and the pull step that puts
a flow run into that clone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from conftest import run
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.steps import set_working_directory
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, Failed
from prefect.utilities.templating import apply_values

from flows.pool import child_status, shared_stages
from flows.pool_deploy import PROJECT_DIR_ENV, WorkerClone
from flows.pool_deploy import main as pool_deploy_main
from flows.remote import check_out, default_dvc_remote, pushed_head
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import Stage, push_run_cache


def _stage(name: str, params: tuple[str, ...], upstream: tuple[str, ...] = ()) -> Stage:
    return Stage(name=name, cmd="true", upstream=upstream, params=params, deps=(), outs=())


STAGES = [
    _stage("prepare", ("seed", "data.image_size")),
    _stage("pretrain", ("seed", "model.width", "train"), ("prepare",)),
    _stage("probe", ("probe.c_values",), ("pretrain",)),
    _stage("report", (), ("probe",)),
]


def test_shared_stages_are_the_ones_no_override_touches() -> None:
    assert shared_stages(STAGES, [{"model.width": 16}, {"model.width": 32}]) == ["prepare"]
    # A section param ("train") is touched by a key under it, a leaf param by its section.
    assert shared_stages(STAGES, [{"probe.c_values": [1.0]}, {"train.lr": 0.1}]) == ["prepare"]
    assert shared_stages(STAGES, [{"data": {"image_size": 8}}, {}]) == []
    # Downstream of a touched stage nothing is shared, even a stage with no params of its own.
    assert shared_stages(STAGES, [{"probe.c_values": [1.0]}, {}]) == ["prepare", "pretrain"]
    assert shared_stages(STAGES, [{"model.width": 16}]) == []  # one experiment: nothing to share


def test_child_status_from_its_final_state() -> None:
    def flow_run(state: object) -> FlowRun:
        return FlowRun(flow_id=uuid4(), state=state)

    assert child_status(flow_run(Completed()), past_deadline=True) == "Success"
    assert child_status(flow_run(Failed()), past_deadline=False) == "Failed"
    assert child_status(flow_run(Failed()), past_deadline=True) == "Timeout"


def _clone_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A bare git remote with one commit, and a clone of it."""
    seed = tmp_path / "seed"
    seed.mkdir()
    run(["git", "init", "-q", "-b", "main"], seed)
    (seed / "params.yaml").write_text("seed: 0\n")
    run(["git", "add", "-A"], seed)
    run(["git", "commit", "-q", "-m", "first"], seed)
    origin = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(seed), str(origin)], tmp_path)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    return origin, clone


def _commit(repo: Path, text: str) -> str:
    (repo / "params.yaml").write_text(text)
    run(["git", "commit", "-q", "-am", text], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def test_pushed_head_refuses_a_commit_the_git_remote_lacks(tmp_path: Path) -> None:
    _, clone = _clone_pair(tmp_path)
    rev = _commit(clone, "seed: 1\n")
    with pytest.raises(UserError, match=r"not on the git remote 'origin'.*git push origin"):
        pushed_head(clone, "origin")
    run(["git", "push", "-q", "origin", "main"], clone)
    assert pushed_head(clone, "origin") == rev


def test_check_out_moves_a_clean_clone_and_refuses_a_changed_one(tmp_path: Path) -> None:
    _, parent = _clone_pair(tmp_path)
    worker = tmp_path / "worker"
    run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(worker)], tmp_path)
    rev = _commit(parent, "seed: 2\n")
    run(["git", "push", "-q", "origin", "main"], parent)

    check_out(worker, rev, "origin")  # fetched, then checked out
    assert (worker / "params.yaml").read_text() == "seed: 2\n"

    newer = _commit(parent, "seed: 3\n")
    run(["git", "push", "-q", "origin", "main"], parent)
    (worker / "params.yaml").write_text("seed: 99\n")  # a hand edit in the worker's clone
    with pytest.raises(UserError, match="changed tracked files"):
        check_out(worker, newer, "origin")
    assert (worker / "params.yaml").read_text() == "seed: 99\n"  # left as it was


def test_no_default_dvc_remote_is_a_user_error(tmp_path: Path) -> None:
    repo = tmp_path / "p"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "init", "-q"], repo)
    with pytest.raises(UserError, match="dvc remote add -d"):
        default_dvc_remote(repo, lambda _line: None)
    run([*dvc, "remote", "add", "-d", "shared", str(tmp_path / "remote")], repo)
    assert default_dvc_remote(repo, lambda _line: None) == "shared"


def test_pull_step_enters_the_clone_the_worker_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tmp_path / "worker-clone"
    clone.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROJECT_DIR_ENV, str(clone))
    # What Prefect does with a pull step when a flow run starts on the worker: fill in the
    # environment's values (the worker's, not the deploying machine's), then call the step.
    ((name, inputs),) = WorkerClone().to_pull_step().items()
    assert name == "prefect.deployments.steps.set_working_directory"
    output = set_working_directory(**apply_values(inputs, dict(os.environ)))
    assert Path(output["directory"]) == clone.resolve() == Path(os.getcwd())


def test_run_cache_pushed_from_one_clone_restores_the_stage_in_another(tmp_path: Path) -> None:
    # A stage with a cached output and an uncached metric, as `prepare` has.
    origin = tmp_path / "a"
    stages = {
        "make": {
            "cmd": "echo data > out.txt && echo '{\"n\": 1}' > m.json",
            "params": ["n"],
            "outs": ["out.txt"],
            "metrics": [{"m.json": {"cache": False}}],
        }
    }
    origin.mkdir()
    run(["git", "init", "-q", "-b", "main"], origin)
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "init", "-q"], origin)
    run([*dvc, "remote", "add", "-d", "shared", str(tmp_path / "remote")], origin)
    (origin / "dvc.yaml").write_text(json.dumps({"stages": stages}))
    (origin / "params.yaml").write_text("n: 1\n")
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "stage"], origin)  # no dvc.lock: only the run-cache helps
    run([*dvc, "repro"], origin)

    assert push_run_cache(origin) == (1, 2)  # the entry; out.txt and the uncached m.json

    other = tmp_path / "b"
    run(["git", "clone", "-q", str(origin), str(other)], tmp_path)
    out = run([*dvc, "repro", "--pull"], other).stdout
    assert "Stage 'make' is cached - skipping run" in out, out
    assert (other / "out.txt").read_text() == "data\n"


def test_pool_deploy_needs_a_server(capsys: pytest.CaptureFixture) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert pool_deploy_main(["--pool", "hjepa"]) == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err
