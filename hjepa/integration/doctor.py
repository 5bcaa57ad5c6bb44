"""``hjepa doctor``: preflight for DVC experiments, each problem printed with its fix.

Why: DVC's experiment commands print nothing (and exit 0) in a repo without commits, and queued
or temp runs see only files tracked by git or DVC — a missing file there fails far from its cause.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hjepa.core.config import load_params
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import open_repo, pipeline_stages


@dataclass
class Finding:
    problem: str
    fix: str


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def _analytics_off(root: Path) -> bool:
    if os.environ.get("DVC_NO_ANALYTICS"):
        return True
    with open_repo(root) as repo:
        return not repo.config["core"].get("analytics", True)


def _untracked(root: Path, path: str) -> list[str]:
    """Files under ``path`` that neither git nor DVC tracks."""
    target = root / path
    if not target.exists():
        return [path]
    if Path(f"{target}.dvc").is_file():
        return []
    others = _git(root, "ls-files", "--others", "--exclude-standard", "--", path).stdout.split()
    ignored = _git(
        root, "ls-files", "--others", "--ignored", "--exclude-standard", "--", path
    ).stdout.split()
    tracked = _git(root, "ls-files", "--", path).stdout.split()
    missing = [p for p in others + ignored if not p.endswith(".pyc") and "__pycache__" not in p]
    if not tracked and not missing:
        missing = [path]
    return missing


def diagnose(root: Path) -> list[Finding]:
    findings: list[Finding] = []
    if _git(root, "rev-parse", "--git-dir").returncode != 0:
        return [Finding("not a git repository", "git init && git add -A && git commit -m init")]
    if _git(root, "rev-parse", "--verify", "HEAD").returncode != 0:
        findings.append(
            Finding(
                "the git repository has no commit: `dvc exp run/show`, `dvc metrics diff` and "
                "`dvc params diff` print nothing without one",
                'git add -A && git commit -m "first commit"',
            )
        )
    if not (root / ".dvc").is_dir():
        findings.append(Finding("DVC is not initialised", "dvc init && git add .dvc"))
    elif not _analytics_off(root):
        findings.append(
            Finding(
                "DVC analytics are on (this machine is offline)", "dvc config core.analytics false"
            )
        )
    params_file = root / "params.yaml"
    try:
        load_params(params_file)
    except UserError as exc:
        findings.append(Finding(f"params file invalid: {exc}", "fix the keys named above"))
    try:
        stages = pipeline_stages(root)
    except UserError as exc:
        findings.append(Finding(str(exc), "restore dvc.yaml"))
        return findings
    produced = {o.rstrip("/") for s in stages for o in s.outs}
    needed = {"dvc.yaml", "params.yaml"}
    for stage in stages:
        for dep in stage.deps:
            dep = dep.rstrip("/")
            if dep in produced or any(dep.startswith(o + "/") for o in produced):
                continue
            needed.add(dep)
    for path in sorted(needed):
        missing = _untracked(root, path)
        if missing:
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            findings.append(
                Finding(
                    f"needed by the pipeline but not tracked by git or DVC: {shown} "
                    "(queued and --temp experiments would not see it)",
                    f"git add {path} && git commit   (or `dvc add {path}` for large data)",
                )
            )
    return findings


def _run(args: argparse.Namespace) -> int:
    findings = diagnose(Path(args.root))
    if not findings:
        print("doctor: all checks passed (git commit, DVC, analytics off, params, tracked files)")
        return 0
    for f in findings:
        print(f"PROBLEM: {f.problem}\n    fix: {f.fix}")
    return 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="preflight checks before dvc exp run / queue")
    parser.add_argument("--root", default=".", help="project root (default: .)")
    parser.set_defaults(func=_run)
