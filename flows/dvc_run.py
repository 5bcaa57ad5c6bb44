"""Run a ``dvc`` command as a subprocess, line by line into a logger, and read what DVC did.

Why a subprocess and not DVC's Python API: a stage command can run for hours, print progress and
crash; in a child process its output streams live into the Prefect run log, a crash cannot take
the flow (or a Prefect worker) down with it, and DVC's repo lock is released when it exits.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from flows.env import dvc_command, subprocess_env

StageStatus = Literal["ran", "skipped", "restored"]

# What `dvc repro` prints per stage (dvc 3.x):
#   Running stage 'x':                                      → the command was executed
#   Stage 'x' didn't change, skipping                       → nothing to do
#   Stage 'x' is cached - skipping run, checking out outputs → outputs restored from the run-cache
_STATUS_PATTERNS: tuple[tuple[str, StageStatus], ...] = (
    ("Running stage '{}'", "ran"),
    ("Stage '{}' didn't change, skipping", "skipped"),
    ("Stage '{}' is cached - skipping run", "restored"),
)


class DvcCommandError(RuntimeError):
    """A ``dvc`` command exited non-zero; the message carries the tail of its output."""


def visible_line(raw: bytes) -> str:
    """One output line as a person would see it in a terminal.

    Progress bars (tqdm) redraw themselves with carriage returns; a terminal shows only the last
    redraw, so only the last non-empty ``\\r`` segment is kept instead of logging every redraw.
    """
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    segments = [s for s in text.split("\r") if s.strip()]
    return segments[-1].rstrip() if segments else ""


def stream_dvc(
    args: Sequence[str], cwd: str | Path, on_line: Callable[[str], None]
) -> tuple[int, list[str]]:
    """Run ``dvc <args>`` in ``cwd``, passing each output line (stdout and stderr) to ``on_line``.

    Returns the exit code and all lines, for parsing what DVC did.
    """
    lines: list[str] = []
    with subprocess.Popen(
        dvc_command(*args),
        cwd=cwd,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = visible_line(raw)
            if line:
                lines.append(line)
                on_line(line)
        code = proc.wait()
    return code, lines


def check_dvc(
    args: Sequence[str], cwd: str | Path, on_line: Callable[[str], None], tail: int = 30
) -> list[str]:
    """``stream_dvc`` that raises ``DvcCommandError`` (with the last ``tail`` lines) on failure."""
    code, lines = stream_dvc(args, cwd, on_line)
    if code != 0:
        shown = "\n".join(lines[-tail:])
        raise DvcCommandError(f"`dvc {' '.join(args)}` in {cwd} exited {code}:\n{shown}")
    return lines


def repro_status(stage: str, lines: Sequence[str]) -> StageStatus:
    """What ``dvc repro --single-item <stage>`` did to ``stage``, from its output.

    Raises ValueError when the output says none of the known things, so a change in DVC's wording
    shows up as an error rather than as a wrong status.
    """
    for template, status in _STATUS_PATTERNS:
        marker = template.format(stage)
        if any(marker in line for line in lines):
            return status
    raise ValueError(
        f"could not tell from DVC's output whether stage '{stage}' ran or was skipped; "
        f"expected one of: {', '.join(t.format(stage) for t, _ in _STATUS_PATTERNS)}"
    )


def dvc_json(args: Sequence[str], cwd: str | Path) -> object:
    """Run ``dvc ... --json`` and parse its stdout; raise ``DvcCommandError`` on failure."""
    proc = subprocess.run(
        dvc_command(*args),
        cwd=cwd,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise DvcCommandError(
            f"`dvc {' '.join(args)}` in {cwd} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise DvcCommandError(f"`dvc {' '.join(args)}` printed no valid JSON ({exc})") from None
