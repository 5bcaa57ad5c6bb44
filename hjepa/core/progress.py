"""Progress of a long loop that a log file can show: a tqdm bar on a terminal, plain lines else.

Why: tqdm redraws its bar with carriage returns. In a log (DVC's output streamed into a Prefect
task run, CI) there is no newline until the bar closes, so a two-hour stage would print its
progress as one line at the end. Off a terminal this prints one ordinary line every
``interval`` seconds instead (and one at the end).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm.auto import tqdm

DEFAULT_INTERVAL = 20.0


class PlainProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close``, written as a line every ``interval`` s."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "progress",
        interval: float = DEFAULT_INTERVAL,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.n, self.desc, self.interval = total, initial, desc, interval
        self.stream, self.clock = stream, clock
        self.postfix: dict[str, Any] = {}
        self.started = self.last = clock()
        self.closed = False

    def set_postfix(self, **fields: Any) -> None:
        self.postfix = fields

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._write()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write()

    def _write(self) -> None:
        self.last = now = self.clock()
        pct = 100.0 * self.n / self.total if self.total else 100.0
        fields = "".join(f", {k}={v}" for k, v in self.postfix.items())
        line = f"{self.desc}: {self.n}/{self.total} steps ({pct:.0f}%), {now - self.started:.0f} s"
        out = self.stream or sys.stderr
        print(line + fields, file=out, flush=True)


def progress_bar(
    total: int, initial: int, desc: str, enabled: bool = True
) -> tqdm[Any] | PlainProgress:
    """A tqdm bar when stderr is a terminal, else ``PlainProgress``; silent when not enabled
    (e.g. on the non-main ranks of a distributed run)."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial, desc)
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        disable=not enabled,
        dynamic_ncols=True,
    )
