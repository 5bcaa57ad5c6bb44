"""Run a ``dvc`` command as a subprocess, line by line into a logger, and read what DVC did.

Why a subprocess and not DVC's Python API: a stage command can run for hours, print progress and
crash; in a child process its output streams live into the Prefect run log, a crash cannot take
the flow (or a Prefect worker) down with it, and DVC's repo lock is released when it exits.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import psutil

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


_MARKER = re.compile(
    r"^(?:Running stage '(?P<ran>.+)':"
    r"|Stage '(?P<skipped>.+)' didn't change, skipping"
    r"|Stage '(?P<restored>.+)' is cached - skipping run)"
)


def stage_marker(line: str) -> tuple[str, StageStatus] | None:
    """``(stage, status)`` when ``line`` is where DVC starts (or skips) a stage, else None."""
    match = _MARKER.match(line.strip())
    if match is None:
        return None
    status = next(k for k, v in match.groupdict().items() if v is not None)
    return match.group(status), status  # type: ignore[return-value]


class DvcCommandError(RuntimeError):
    """A ``dvc`` command exited non-zero; the message carries the tail of its output."""


class DvcTimeout(DvcCommandError):
    """A ``dvc`` command ran past its deadline and was stopped (its stage commands with it)."""


def command_error(
    args: Sequence[str], cwd: str | Path, outcome: str, lines: Sequence[str], tail: int = 30
) -> str:
    """The message of a failed ``dvc`` command: what ran where, what happened, its last lines."""
    shown = "\n".join(lines[-tail:])
    return f"`dvc {' '.join(args)}` in {cwd} {outcome}:\n{shown}"


def stop_process_tree(pid: int, grace_seconds: float = 10.0) -> None:
    """Stop ``pid`` and everything it started: descendants first, then ``pid`` itself.

    The stage commands (DVC's children) are terminated first so DVC sees them fail and cleans up
    its temp workspace and lock as on any failed stage; whatever is still alive after
    ``grace_seconds`` is killed. Processes that are already gone are skipped.
    """
    try:
        root = psutil.Process(pid)
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in reversed(children):  # deepest last in the list: stop the leaves first
        _signal(proc, psutil.Process.terminate)
    _, alive = psutil.wait_procs(children, timeout=grace_seconds)
    for proc in alive:
        _signal(proc, psutil.Process.kill)
    _signal(root, psutil.Process.terminate)
    _, alive = psutil.wait_procs([root], timeout=grace_seconds)
    for proc in alive:
        _signal(proc, psutil.Process.kill)


def _signal(proc: psutil.Process, how: Callable[[psutil.Process], None]) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        how(proc)


def visible_line(raw: bytes) -> str:
    """One output line as a person would see it in a terminal.

    Progress bars (tqdm) redraw themselves with carriage returns; a terminal shows only the last
    redraw, so only the last non-empty ``\\r`` segment is kept instead of logging every redraw.
    """
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    segments = [s for s in text.split("\r") if s.strip()]
    return segments[-1].rstrip() if segments else ""


class DvcOutput:
    """A running ``dvc <args>`` whose output lines (stdout and stderr) are read one at a time.

    Iterating yields each visible line as it is printed and keeps them all in ``lines``;
    ``finish()`` then returns the exit code. With ``timeout`` (seconds), a command still running
    then is stopped with everything it started (``stop_process_tree``) and ``finish()`` raises
    ``DvcTimeout``. Leaving the ``with`` block stops a command that is still running.
    """

    def __init__(self, args: Sequence[str], cwd: str | Path, timeout: float | None = None):
        self.args, self.cwd, self.timeout = list(args), cwd, timeout
        self.lines: list[str] = []
        self._expired = threading.Event()
        self._proc = subprocess.Popen(
            dvc_command(*args),
            cwd=cwd,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._timer = threading.Timer(max(timeout, 0.0), _expire, (self._proc, self._expired))
            self._timer.daemon = True
            self._timer.start()

    def __enter__(self) -> DvcOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._proc.poll() is None:
            stop_process_tree(self._proc.pid)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait()

    def __iter__(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = visible_line(raw)
            if line:
                self.lines.append(line)
                yield line

    def finish(self) -> int:
        """Wait for the exit code; ``DvcTimeout`` if the deadline stopped the command."""
        code = self._proc.wait()
        if self._timer is not None:
            self._timer.cancel()
        if self._expired.is_set():
            outcome = f"ran past its deadline ({self.timeout:.0f} s) and was stopped"
            raise DvcTimeout(command_error(self.args, self.cwd, outcome, self.lines))
        return code

    def error(self, code: int, tail: int = 30) -> DvcCommandError:
        """The error for a non-zero exit ``code``, with the last ``tail`` lines."""
        outcome = f"exited {code}"
        return DvcCommandError(command_error(self.args, self.cwd, outcome, self.lines, tail))


def stream_dvc(
    args: Sequence[str],
    cwd: str | Path,
    on_line: Callable[[str], None],
    timeout: float | None = None,
) -> tuple[int, list[str]]:
    """Run ``dvc <args>`` in ``cwd``, passing each output line (stdout and stderr) to ``on_line``.

    Returns the exit code and all lines, for parsing what DVC did. With ``timeout`` (seconds),
    a command still running then is stopped with everything it started (``stop_process_tree``)
    and ``DvcTimeout`` is raised.
    """
    with DvcOutput(args, cwd, timeout) as out:
        for line in out:
            on_line(line)
        return out.finish(), out.lines


def _expire(proc: subprocess.Popen[bytes], expired: threading.Event) -> None:
    if proc.poll() is None:  # finished just in time: not a timeout
        expired.set()
        stop_process_tree(proc.pid)


def check_dvc(
    args: Sequence[str],
    cwd: str | Path,
    on_line: Callable[[str], None],
    tail: int = 30,
    timeout: float | None = None,
) -> list[str]:
    """``stream_dvc`` that raises ``DvcCommandError`` (with the last ``tail`` lines) on failure
    and ``DvcTimeout`` past ``timeout`` seconds."""
    with DvcOutput(args, cwd, timeout) as out:
        for line in out:
            on_line(line)
        code = out.finish()
        if code != 0:
            raise out.error(code, tail)
        return out.lines


def start_queue_workers(
    jobs: int, cwd: str | Path, on_line: Callable[[str], None], timeout: float = 120.0
) -> None:
    """``dvc queue start --jobs <jobs>``: DVC's queue workers, started as daemons.

    Not through ``stream_dvc``: the daemonised workers inherit the launcher's stdout, so a pipe
    would stay open (and a reader would block) for as long as any worker lives, long after
    ``dvc queue start`` itself returned. Its output goes to a temp file instead.
    """
    args = ["queue", "start", "--jobs", str(jobs)]
    with tempfile.TemporaryFile() as out:
        try:
            code = subprocess.run(
                dvc_command(*args),
                cwd=cwd,
                env=subprocess_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
        out.seek(0)
        lines = [line for line in map(visible_line, out.read().splitlines()) if line]
    for line in lines:
        on_line(line)
    if code != 0:
        outcome = f"ran past {timeout:.0f} s" if code is None else f"exited {code}"
        raise DvcCommandError(command_error(args, cwd, outcome, lines))


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
