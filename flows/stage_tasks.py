"""One Prefect task run per DVC stage, cut out of the output of a single ``dvc`` command.

Why: ``dvc exp run`` runs every stage of an experiment in one process, so Prefect would show one
opaque task per experiment. DVC announces each stage with a marker line ("Running stage 'x':",
"Stage 'x' didn't change, skipping", "Stage 'x' is cached - skipping run"), so the output is cut
at those lines: every stage gets its own task run, named ``"<experiment> · <stage>"``, whose log is
that stage's output as it is printed and whose final state is named after what DVC did (``Ran``,
``Skipped``, ``Restored``) or is ``Failed`` for the stage DVC stopped at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from flows.dvc_run import DvcCommandError, StageStatus, stage_marker

SEPARATOR = " · "


def log_dvc_line(logger: logging.Logger | logging.LoggerAdapter[Any], line: str) -> None:
    """Log one line of DVC or stage output at the level it announces.

    Lines starting with "warning" (any case, as the stages and DVC print them) are warnings,
    "ERROR" lines errors, the rest info.
    """
    head = line.lstrip().lower()
    if head.startswith("warning"):
        logger.warning(line)
    elif head.startswith("error"):
        logger.error(line)
    else:
        logger.info(line)


def stage_state(stage: str, status: StageStatus) -> State[Any]:
    """A completed state named after what DVC did; its result is ``{"stage", "status"}``."""
    return Completed(
        name=status.capitalize(),
        message=f"stage '{stage}' {status}",
        data={"stage": stage, "status": status},
    )


class StageStream:
    """The output lines of one ``dvc`` command, consumed stage by stage.

    ``preamble()`` yields what DVC prints before the first stage; then, while ``next_stage`` is
    set, ``stage_lines()`` yields the lines of that stage up to the next marker. ``finish`` is
    called once the output ends and returns the command's exit code (it may raise, e.g. on a
    timeout); ``code`` holds it afterwards.
    """

    def __init__(self, lines: Iterable[str], finish: Callable[[], int]):
        self._lines = iter(lines)
        self._finish = finish
        self._marker_line = ""
        self.next_stage: tuple[str, StageStatus] | None = None
        self.code: int | None = None

    def preamble(self) -> Iterator[str]:
        return self._until_marker()

    def stage_lines(self) -> Iterator[str]:
        """The lines of ``next_stage``, its marker line first."""
        self.next_stage = None
        yield self._marker_line
        yield from self._until_marker()

    def _until_marker(self) -> Iterator[str]:
        for line in self._lines:
            marker = stage_marker(line)
            if marker is not None:
                self.next_stage, self._marker_line = marker, line
                return
            yield line
        self.code = self._finish()

    @property
    def ended(self) -> bool:
        return self.code is not None


@task(name="dvc-stage", cache_policy=NO_CACHE, persist_result=False)
def relay_stage(stage: str, status: StageStatus, stream: StageStream) -> State[Any]:
    """Log one stage's output as DVC prints it; fail if the command failed in this stage."""
    logger = get_run_logger()
    for line in stream.stage_lines():
        log_dvc_line(logger, line)
    if stream.ended and stream.code != 0:
        raise DvcCommandError(f"stage '{stage}' failed (dvc exited {stream.code}); see the log")
    return stage_state(stage, status)


def relay_stages(label: str, stream: StageStream) -> list[State[Any]]:
    """A ``relay_stage`` task run per stage of ``stream``, named ``"<label> · <stage>"``.

    Stops after a failed stage; returns the final states in the order DVC ran the stages.
    """
    logger = get_run_logger()
    for line in stream.preamble():
        log_dvc_line(logger, line)
    states = []
    while stream.next_stage is not None:
        stage, status = stream.next_stage
        named = relay_stage.with_options(task_run_name=f"{label}{SEPARATOR}{stage}")
        state = named(stage, status, stream, return_state=True)
        states.append(state)
        if state.is_failed():
            break
    return states
