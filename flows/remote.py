"""What a machine of a work pool does with the shared remotes around one experiment.

Across machines nothing is shared but two remotes: the **git remote** (code, params, and the
experiment refs DVC stores as git refs) and the **DVC remote** (stage outputs and DVC's
run-cache). A worker checks out the commit it was asked for, runs with ``--pull`` (outputs DVC's
run-cache already knows are downloaded, not recomputed), and pushes its experiment and the
run-cache to the remotes; the machine that gathers the results pulls only the experiment refs,
which carry params and metrics (metrics files are ``cache: false``, so they live in git).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from flows.dvc_run import check_dvc, stream_dvc
from flows.env import subprocess_env
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import push_run_cache

GIT_SECONDS = 300.0  # a fetch or checkout of a lab repository; anything longer is a hang


def git(args: Sequence[str], cwd: str | Path) -> str:
    """``git <args>`` in ``cwd``; its stdout, or a UserError with git's own message."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"`git {' '.join(args)}` in {cwd} ran past {GIT_SECONDS:.0f} s") from None
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip()
        raise UserError(f"`git {' '.join(args)}` in {cwd} failed: {why}")
    return proc.stdout.strip()


def pushed_head(project_dir: str | Path, git_remote: str) -> str:
    """The commit ``project_dir`` is at, after checking that ``git_remote`` has it.

    Workers on other machines can only check out what the git remote holds, so an unpushed commit
    is refused here, before any experiment is submitted.
    """
    rev = git(["rev-parse", "HEAD"], project_dir)
    git(["fetch", "--quiet", git_remote], project_dir)
    if not git(["branch", "--remotes", "--contains", rev], project_dir):
        raise UserError(
            f"{project_dir}: commit {rev[:12]} is not on the git remote '{git_remote}', so the "
            f"pool's workers cannot check it out; push it first (git push {git_remote})"
        )
    return rev


def check_out(project_dir: str | Path, rev: str, git_remote: str) -> None:
    """Put the worker's clone ``project_dir`` on commit ``rev`` (fetched from ``git_remote``).

    A worker's clone is the pool's, not a person's: it is moved to the commit each experiment
    asks for. Tracked files changed by hand would be lost, so they stop the run instead.
    """
    if git(["rev-parse", "HEAD"], project_dir) == rev:
        return
    changed = git(["status", "--porcelain", "--untracked-files=no"], project_dir)
    if changed:
        raise UserError(
            f"{project_dir}: this worker's clone has changed tracked files, and the experiment "
            f"needs commit {rev[:12]}; commit or discard them (git status):\n{changed}"
        )
    git(["fetch", "--quiet", git_remote], project_dir)
    git(["checkout", "--quiet", "--detach", rev], project_dir)


def default_dvc_remote(project_dir: str | Path, on_line: Callable[[str], None]) -> str:
    """The name of the project's default DVC remote; a UserError if there is none."""
    code, lines = stream_dvc(["remote", "default"], project_dir, on_line)
    name = lines[-1].strip() if lines else ""
    if code != 0 or not name:
        raise UserError(
            f"{project_dir}: no default DVC remote, so workers cannot share stage outputs; "
            "add one that every machine reaches and commit it, e.g. "
            "`dvc remote add -d shared /mnt/shared/hjepa-cache && git commit .dvc/config`"
        )
    return name


def push_experiment(
    project_dir: str | Path, name: str, git_remote: str, on_line: Callable[[str], None]
) -> None:
    """The experiment ref to ``git_remote`` and its outputs to the default DVC remote
    (``dvc exp push``), then the run-cache with the outputs it names (``push_run_cache``), so
    other machines restore those stages instead of recomputing them."""
    check_dvc(["exp", "push", git_remote, name], project_dir, on_line)
    entries, sent = push_run_cache(project_dir)
    on_line(f"run-cache pushed: {entries} entries, {sent} objects sent")


def pull_experiment_refs(
    project_dir: str | Path, names: Sequence[str], git_remote: str, on_line: Callable[[str], None]
) -> None:
    """``dvc exp pull --no-cache``: the experiments' refs (params, metrics), not their outputs."""
    if names:
        check_dvc(["exp", "pull", "--no-cache", git_remote, *names], project_dir, on_line)
