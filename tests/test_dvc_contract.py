"""The contract under DVC (issue 17): a typo costs nothing, a failure loses nothing, the same
result gives the same bytes. Each step runs real ``dvc repro`` / ``dvc exp run`` in a throw-away
project copy with tiny params, after one baseline run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import run

pytestmark = pytest.mark.e2e

# Outputs of every stage that a failed run must leave exactly as they were.
KEPT = [
    "data/prepared/manifest.csv",
    "data/prepared/train_images.npy",
    "models/encoder_ema.pt",
    "metrics/pretrain.json",
    "metrics/pretrain_log.tsv",
    "params_read/pretrain.json",
    "metrics/probe.json",
    "reports/report.md",
]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def snapshot_of(project: Path, paths: list[str]) -> dict[str, bytes]:
    return {rel: (project / rel).read_bytes() for rel in paths}


def snapshot(project: Path) -> dict[str, bytes]:
    return snapshot_of(project, KEPT)


def dvc(project: Path, *args: str) -> tuple[int, str]:
    proc = run(["dvc", *args], project, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_typo_bad_value_and_failing_stage_keep_every_output(make_project):
    project = make_project()
    rc, out = dvc(project, "repro")
    assert rc == 0, out
    assert ran(out) == ["validate", "prepare", "pretrain", "probe", "report"]
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "baseline"], project)
    before = snapshot(project)
    params = project / "params.yaml"
    good = params.read_text()

    # A misspelled key: our message (key + suggestion), from the first stage; nothing touched.
    params.write_text(good.replace("use_layerscale:", "use_layer_scale:"))
    rc, out = dvc(project, "repro")
    assert rc != 0
    assert "model.layerscale.use_layer_scale: unknown key; did you mean 'use_layerscale'?" in out
    assert ran(out) == ["validate"] and "are missing" not in out
    assert snapshot(project) == before
    params.write_text(good)

    # A bad value through `dvc exp run -S`, in the workspace and in a temp copy.
    for extra in ([], ["--temp"]):
        rc, out = dvc(project, "exp", "run", *extra, "-S", "model.width=abc")
        assert rc != 0
        assert 'model.width = "abc": Input should be a valid integer' in out, out
        assert snapshot(project) == before
        params.write_text(good)

    # A stage that fails while running (a corrupt image). Prepare stays in DVC's run-cache, so
    # DVC deletes its outs before it runs: the error ends with the one command that restores
    # them. Every later stage's outs persist and are untouched.
    for cls in ("cat", "dog"):
        (project / "data" / "bad" / cls).mkdir(parents=True)
        (project / "data" / "bad" / cls / "x.png").write_bytes(b"not a png" * 40)
    params.write_text(
        good.replace("source: digits", "source: image_folder").replace(
            "path: data/raw", "path: data/bad"
        )
    )
    rc, out = dvc(project, "repro")
    assert rc != 0 and "error in stage 'prepare'" in out and "x.png" in out, out
    assert "`dvc checkout prepare` restores them" in out, out
    later = [rel for rel in KEPT if not rel.startswith("data/prepared")]
    assert snapshot_of(project, later) == {k: before[k] for k in later}
    params.write_text(good)
    shutil.rmtree(project / "data" / "bad")
    rc, out = dvc(project, "checkout", "prepare")
    assert rc == 0, out
    assert snapshot(project) == before

    # Resuming from the final checkpoint writes the same encoder bytes: probe and report skip.
    (project / "models" / "encoder_ema.pt").unlink()
    rc, out = dvc(project, "repro")
    assert rc == 0, out
    assert "pretrain" in ran(out) and "probe" not in ran(out) and "report" not in ran(out), out
    assert snapshot(project) == before
