"""The DVC pipeline end to end, in throw-away project copies with tiny params.

Asserts on DVC's own output and lock file: which stages ran, experiments, metrics diff, the
params-read check, queued experiments, doctor and a local-directory remote.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import project_env, run

pytestmark = pytest.mark.e2e

STAGES = ["validate", "prepare", "pretrain", "probe", "report"]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def skipped(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)


def dvc(project: Path, *args: str, check: bool = True) -> str:
    proc = run(["dvc", *args], project, check=check)
    return proc.stdout + proc.stderr


def find_exp(shown: list, name: str) -> dict:
    """The revision entry of experiment ``name`` in ``dvc exp show --json`` output."""
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") == name or exp.get("name") == name:
                    return rev
    raise AssertionError(f"experiment {name} not in exp show: {json.dumps(shown)[:2000]}")


def lock(project: Path) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())


def test_repro_noop_params_check_and_layerscale_experiment(make_project):
    project = make_project()
    out = dvc(project, "repro")
    assert ran(out) == STAGES
    assert (project / "reports" / "report.md").is_file()

    out = dvc(project, "repro")
    assert ran(out) == []
    assert "Data and pipelines are up to date" in out or sorted(skipped(out)) == sorted(STAGES)

    # Every stage's declared params equal the params it read.
    check = run(["hjepa", "dag", "check"], project)
    assert "dag check OK" in check.stdout

    # Commit the baseline so experiments and metrics diff have something to compare with.
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "baseline"], project)
    base_probe = json.loads((project / "metrics" / "probe.json").read_text())

    out = dvc(project, "exp", "run", "-S", "model.layerscale.use_layerscale=true", "-n", "ls-on")
    assert ran(out) == ["validate", "pretrain", "probe", "report"], out
    assert "prepare" in skipped(out)
    locked = lock(project)["stages"]
    assert locked["pretrain"]["params"]["params.yaml"]["model.layerscale.use_layerscale"] is True
    exp_probe = json.loads((project / "metrics" / "probe.json").read_text())
    assert exp_probe["linear_top1"] != base_probe["linear_top1"] or (
        exp_probe["knn_top1"] != base_probe["knn_top1"]
    )

    shown = json.loads(dvc(project, "exp", "show", "--json"))
    exp = find_exp(shown, "ls-on")
    params = exp["data"]["params"]["params.yaml"]["data"]
    assert params["model"]["layerscale"]["use_layerscale"] is True
    metrics = exp["data"]["metrics"]["metrics/probe.json"]["data"]
    assert metrics["linear_top1"] == exp_probe["linear_top1"]
    baseline = next(e for e in shown if e["rev"] != "workspace")
    base_params = baseline["data"]["params"]["params.yaml"]["data"]
    assert base_params["model"]["layerscale"]["use_layerscale"] is False
    diff = dvc(project, "metrics", "diff", "HEAD")
    assert "metrics/probe.json" in diff and "linear_top1" in diff

    # A scientific-notation override goes through DVC's -S and our schema.
    out = dvc(project, "exp", "run", "-S", "train.lr=1e-4", "-n", "lr-sci")
    assert "pretrain" in ran(out)
    assert run(["hjepa", "params", "check"], project).returncode == 0


def test_probe_change_reruns_probe_and_report_only_and_image_size_reruns_all(make_project):
    project = make_project()
    dvc(project, "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["probe"]["knn_k"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro")
    assert ran(out) == ["validate", "probe", "report"], out

    params["data"]["image_size"] = 12  # 12 / patch 2 = grid 6, divisible by level scale 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro")
    assert ran(out) == STAGES, out


def test_dag_check_fails_on_a_read_but_undeclared_key(make_project):
    project = make_project()
    dvc(project, "repro", "prepare")
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    spec["stages"]["prepare"]["params"].remove("data.image_size")  # read, now undeclared
    spec["stages"]["prepare"]["params"].append("probe.knn_k")  # declared, never read
    (project / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = run(["hjepa", "dag", "check"], project, check=False)
    assert proc.returncode == 2
    assert "stage 'prepare' reads 'data.image_size'" in proc.stderr
    assert "stage 'prepare' lists 'probe.knn_k'" in proc.stderr


def test_queue_two_experiments_in_parallel(make_project):
    project = make_project()
    dvc(project, "repro")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "baseline"], project)
    dvc(project, "exp", "run", "--queue", "-S", "probe.knn_k=3", "-n", "q-k3")
    dvc(project, "exp", "run", "--queue", "-S", "probe.knn_k=7", "-n", "q-k7")
    # `queue start` forks worker daemons that inherit its stdout/stderr. Captured into pipes, a
    # worker that lingers after its tasks (seen with DVC's celery workers) would keep the pipes
    # open and block this test forever; a log file cannot.
    with open(project / "queue_start.log", "w") as log:
        subprocess.run(
            ["dvc", "queue", "start", "-j", "2"],
            cwd=project,
            env=project_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=120,
        )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            status = dvc(project, "queue", "status")
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        assert "Queued" not in status and "Running" not in status, f"queue not done:\n{status}"
        assert "Failed" not in status, status
    finally:
        dvc(project, "queue", "stop", "--kill", check=False)
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    for name, k in (("q-k3", 3), ("q-k7", 7)):
        exp = find_exp(shown, name)
        assert exp["data"]["params"]["params.yaml"]["data"]["probe"]["knn_k"] == k
        assert "knn_top1" in exp["data"]["metrics"]["metrics/probe.json"]["data"]


def test_doctor_flags_no_commit_and_untracked_needed_file(make_project, tmp_path):
    project = make_project(commit=False)
    proc = run(["hjepa", "doctor"], project, check=False)
    assert proc.returncode == 1
    assert "no commit" in proc.stdout and "git commit" in proc.stdout
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "init"], project)
    assert run(["hjepa", "doctor"], project, check=False).returncode == 0
    (project / "hjepa" / "models" / "extra_block.py").write_text("X = 1\n")
    proc = run(["hjepa", "doctor"], project, check=False)
    assert proc.returncode == 1
    assert "hjepa/models/extra_block.py" in proc.stdout and "git add" in proc.stdout


def test_remote_push_pull_reproduces_without_recomputing(make_project, tmp_path):
    project = make_project()
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "shared", str(remote))
    dvc(project, "repro")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "results"], project)
    dvc(project, "push")
    assert any(remote.rglob("*"))

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert (clone / "models" / "encoder_ema.pt").is_file()
    out = dvc(clone, "repro")
    assert ran(out) == [], out
    shutil.rmtree(clone)
