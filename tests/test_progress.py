"""Off a terminal, long stages print a plain progress line at least every interval."""

from __future__ import annotations

import io

from hjepa.core.progress import PlainProgress, progress_bar


def test_plain_progress_prints_a_line_per_interval_and_at_the_end() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = PlainProgress(100, initial=10, desc="pretrain", interval=20.0, stream=out,
                        clock=lambda: now[0])  # fmt: skip
    for _ in range(30):
        now[0] += 1.0  # one step per second
        bar.update(1)
        bar.set_postfix(epoch="1/2", loss="0.5")
    bar.close()
    bar.close()  # closing twice prints once
    lines = out.getvalue().splitlines()
    assert lines == [
        "pretrain: 30/100 steps (30%), 20 s, epoch=1/2, loss=0.5",
        "pretrain: 40/100 steps (40%), 30 s, epoch=1/2, loss=0.5",
    ]
    assert "\r" not in out.getvalue()


def test_progress_bar_is_plain_when_stderr_is_not_a_terminal() -> None:
    # pytest captures stderr: not a terminal, as under DVC or a Prefect worker.
    assert isinstance(progress_bar(10, 0, "x"), PlainProgress)
    assert not isinstance(progress_bar(10, 0, "x", enabled=False), PlainProgress)
