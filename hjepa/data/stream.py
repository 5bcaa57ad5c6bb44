"""Decoding a ``Source`` in a process pool, straight into a staging file on disk.

Why a staging file: the split depends on the hashes of *all* images (identical images must land
in one split), so no image can go to its final array before every image is decoded. Each image
is therefore decoded once, written in source order to a flat file of fixed-size rows, and only
its label, hash and provenance stay in memory; ``hjepa.data.build`` then copies the rows out by
split. Peak memory is bounded by the chunks in flight, not by the number of images.

Why the workers write the rows themselves (``os.pwrite`` at the chunk's row offset, known before
decoding from the chunk's label count): the pixels then never cross a pipe, and the parent
process, which on a 2-core machine shares the cores with the workers, only collects hashes.

Why plain file writes and not a memory map: resident pages of a shared mapping count in the
process's RSS, so writing through a map would grow it with the data set again.

Determinism: every chunk's rows land at the same offsets whatever process decodes it, and the
hashes are collected in source order (at most ``2 × workers`` chunks in flight), so the staging
file is byte-identical for any worker count.
The worker count does not change the result, so it is not a DVC param: it comes from
``--workers`` / ``HJEPA_PREPARE_WORKERS`` / the usable CPU count (``resolve_workers``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hjepa.core.errors import UserError
from hjepa.data.images import image_hash
from hjepa.data.sources import Chunk, Convert, Source

WORKERS_ENV = "HJEPA_PREPARE_WORKERS"
LOG_EVERY_S = 30.0  # progress line interval when stderr is not a terminal (DVC logs, CI)


def resolve_workers(flag: int | None = None) -> int:
    """Worker processes: ``flag`` (``--workers``), else ``$HJEPA_PREPARE_WORKERS``, else the
    CPUs this process may use."""
    if flag is not None:
        if flag < 1:
            raise UserError(f"--workers {flag}: expected a positive number of worker processes")
        return flag
    env = os.environ.get(WORKERS_ENV)
    if env is not None:
        if not env.strip().isdigit() or int(env) < 1:
            raise UserError(
                f"{WORKERS_ENV}={env!r}: expected a positive whole number of worker processes"
            )
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ChunkTask:
    """What a worker needs to decode one chunk into the staging file (picklable)."""

    convert: Convert
    payload: Any
    count: int  # images in the chunk (its labels)
    size: int
    channels: int
    staging: str
    first_row: int  # the chunk's first row in the staging file


def convert_chunk(task: ChunkTask) -> list[str]:
    """A worker's task: decode the chunk, write its rows at their offset, return their hashes."""
    images = task.convert(task.payload, task.size, task.channels)
    if len(images) != task.count:  # a bug in that source: no row may land off its slot
        raise RuntimeError(f"a chunk of {task.count} labels decoded to {len(images)} images")
    rows = memoryview(images.tobytes())
    offset = task.first_row * task.size * task.size * task.channels
    fd = os.open(task.staging, os.O_WRONLY)
    try:
        written = 0
        while written < len(rows):  # pwrite may write less than asked
            written += os.pwrite(fd, rows[written:], offset + written)
    finally:
        os.close(fd)
    return [image_hash(row) for row in images]


def _tasks(
    chunks: Iterator[Chunk], staging: Path, size: int, channels: int
) -> Iterator[tuple[Chunk, ChunkTask]]:
    """Each chunk with its task: its rows start where the previous chunk's rows end."""
    first_row = 0
    for chunk in chunks:
        count = len(chunk.labels)
        yield (
            chunk,
            ChunkTask(chunk.convert, chunk.payload, count, size, channels, str(staging), first_row),
        )
        first_row += count


def _ordered_results(
    chunks: Iterator[Chunk],
    staging: Path,
    size: int,
    channels: int,
    workers: int,
    warm_up: Callable[[], None] | None,
) -> Iterator[tuple[Chunk, list[str]]]:
    """(chunk, its hashes) in source order, its rows written; with one worker, in this process.

    ``warm_up`` (pool only) runs in a thread of this process once the workers are forked (all at
    the first submit with the fork start method, so no thread is copied into them) and is
    joined before the pool closes.
    """
    tasks = _tasks(chunks, staging, size, channels)
    if workers == 1:
        for chunk, task in tasks:
            yield chunk, convert_chunk(task)
        return
    pending: deque[tuple[Chunk, Future[list[str]]]] = deque()
    thread: threading.Thread | None = None
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            for chunk, task in tasks:
                pending.append((chunk, pool.submit(convert_chunk, task)))
                if thread is None and warm_up is not None:
                    thread = threading.Thread(target=_quietly, args=(warm_up,), daemon=True)
                    thread.start()
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()
            if thread is not None:
                thread.join()


def _quietly(warm_up: Callable[[], None]) -> None:
    """Run a warm-up, dropping its errors: it only saves time, and the real call it prepares
    raises whatever is wrong, in the main thread, where the stage reports it."""
    with contextlib.suppress(Exception):
        warm_up()


class Progress:
    """A tqdm bar (images/s) on a terminal; otherwise a log line every ``LOG_EVERY_S`` seconds
    and one at the end, so DVC's and CI logs show progress without carriage-return noise."""

    def __init__(self, desc: str, total: int | None) -> None:
        self.desc = desc
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(desc=desc, total=total, unit="img", disable=not self.tty)
        self.count = 0
        self.start = self.last_log = time.monotonic()

    def update(self, n: int) -> None:
        self.count += n
        self.bar.update(n)
        now = time.monotonic()
        if not self.tty and now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            self._log(now)

    def close(self) -> None:
        self.bar.close()
        if not self.tty:
            self._log(time.monotonic())

    def _log(self, now: float) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        print(f"{self.desc}: {self.count} images, {rate:.0f} images/s", file=sys.stderr)


@dataclass(frozen=True)
class Decoded:
    """What stays in memory of a decoded source: one entry per image, in source order."""

    labels: np.ndarray  # int64
    sources: list[str]
    hashes: list[str]


def decode_to_staging(
    source: Source,
    staging: Path,
    size: int,
    channels: int,
    workers: int,
    warm_up: Callable[[], None] | None = None,
) -> Decoded:
    """Decode every image of ``source`` into ``staging`` (rows of ``size·size·channels`` uint8,
    source order, no header) and return the labels, provenance and hashes.

    ``warm_up``: one-time set-up of what comes after decoding (e.g. the manifest validation's),
    run in a thread of this process while a pool of several workers decodes and this process
    would only wait; with one worker it is not run here (the later call pays it, as it would).
    """
    labels: list[np.ndarray] = []
    sources: list[str] = []
    hashes: list[str] = []
    progress = Progress(f"prepare {source.name}", source.count)
    staging.write_bytes(b"")  # the workers open it for writing at their offsets, never create it
    try:
        for chunk, chunk_hashes in _ordered_results(
            source.chunks, staging, size, channels, workers, warm_up
        ):
            labels.append(chunk.labels)
            sources += chunk.sources
            hashes += chunk_hashes
            progress.update(len(chunk_hashes))
    finally:
        progress.close()
    label_array = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    return Decoded(label_array.astype(np.int64, copy=False), sources, hashes)
