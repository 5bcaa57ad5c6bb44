"""Decoding a ``Source`` in a process pool, straight into a staging file on disk.

Why a staging file: the split depends on the hashes of *all* images (identical images must land
in one split), so no image can go to its final array before every image is decoded. Each image
is therefore decoded once, written in source order to a flat file of fixed-size rows, and only
its label, hash and provenance stay in memory; ``hjepa.data.build`` then copies the rows out by
split. Peak memory is bounded by the chunks in flight, not by the number of images.

Why plain file writes and not a memory map: resident pages of a shared mapping count in the
process's RSS, so writing through a map would grow it with the data set again.

Determinism: chunks are submitted in source order and their results consumed in that order
(at most ``2 × workers`` in flight), so the staging file is byte-identical for any worker count.
The worker count does not change the result, so it is not a DVC param: it comes from
``--workers`` / ``HJEPA_PREPARE_WORKERS`` / the usable CPU count (``resolve_workers``).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator
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


def convert_chunk(
    convert: Convert, payload: Any, size: int, channels: int
) -> tuple[bytes, list[str]]:
    """A worker's task: the chunk's stored images (as bytes, rows in order) and their hashes."""
    images = convert(payload, size, channels)
    return images.tobytes(), [image_hash(row) for row in images]


def _ordered_results(
    chunks: Iterator[Chunk], size: int, channels: int, workers: int
) -> Iterator[tuple[Chunk, tuple[bytes, list[str]]]]:
    """(chunk, its converted result) in source order; with one worker, in this process."""
    if workers == 1:
        for chunk in chunks:
            yield chunk, convert_chunk(chunk.convert, chunk.payload, size, channels)
        return
    pending: deque[tuple[Chunk, Future[tuple[bytes, list[str]]]]] = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            for chunk in chunks:
                args = (chunk.convert, chunk.payload, size, channels)
                pending.append((chunk, pool.submit(convert_chunk, *args)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


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
    source: Source, staging: Path, size: int, channels: int, workers: int
) -> Decoded:
    """Decode every image of ``source`` into ``staging`` (rows of ``size·size·channels`` uint8,
    source order, no header) and return the labels, provenance and hashes."""
    labels: list[np.ndarray] = []
    sources: list[str] = []
    hashes: list[str] = []
    progress = Progress(f"prepare {source.name}", source.count)
    try:
        with open(staging, "wb") as out:
            for chunk, (rows, chunk_hashes) in _ordered_results(
                source.chunks, size, channels, workers
            ):
                out.write(rows)
                labels.append(chunk.labels)
                sources += chunk.sources
                hashes += chunk_hashes
                progress.update(len(chunk_hashes))
    finally:
        progress.close()
    label_array = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    return Decoded(label_array.astype(np.int64, copy=False), sources, hashes)
