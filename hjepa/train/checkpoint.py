"""Training checkpoints that can be trusted: atomic, verified, params-bound, pruned.

A checkpoint ``ckpt_epochNNNN.pt`` is written atomically (temp file, fsync, rename), then its
sidecar ``ckpt_epochNNNN.pt.sha256`` (digest and size) the same way. A checkpoint counts only if
its sidecar exists and matches: a run killed mid-write leaves at most a temp file (removed on the
next start) or a checkpoint without a sidecar (skipped). Each checkpoint carries the hash of the
params that shape training; one written under other params is never resumed.
Everything loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hjepa.core.io import atomic_path, write_text

FORMAT = "hjepa-checkpoint/1"
_NAME = re.compile(r"^ckpt_epoch(\d{4,})\.pt$")


def params_hash(shaping: dict[str, Any]) -> str:
    """Stable hash of the params that shape the training trajectory."""
    blob = json.dumps(shaping, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"ckpt_epoch{epoch:04d}.pt"


def save_checkpoint(directory: Path, epoch: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` for the end of ``epoch`` (1-based), then prune to the newest ``keep``."""
    path = checkpoint_path(directory, epoch)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    write_text(Path(f"{path}.sha256"), f"{_digest(path)} {path.stat().st_size}\n")
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        Path(f"{old}.sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first (by epoch number)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Temp files left by a run killed mid-write."""
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def verify(path: Path) -> str | None:
    """None if ``path`` matches its sidecar digest and size, else the reason it does not."""
    side = Path(f"{path}.sha256")
    if not side.is_file():
        return "no .sha256 sidecar (the write did not finish)"
    try:
        digest, size = side.read_text().split()
    except ValueError:
        return "unreadable .sha256 sidecar"
    actual = path.stat().st_size
    if actual != int(size):
        return f"size {actual} bytes, expected {size} (truncated?)"
    if _digest(path) != digest:
        return "sha256 mismatch (corrupt)"
    return None


@dataclass
class ResumePoint:
    path: Path
    state: dict[str, Any]


def find_resume_point(
    directory: Path, expected_hash: str, log: Any = print
) -> tuple[ResumePoint | None, list[Path]]:
    """Newest good checkpoint written under ``expected_hash``.

    Returns it (or None) and the checkpoints written under other params (not resumable). Bad
    files are reported through ``log`` and skipped in favour of older good ones.
    """
    foreign: list[Path] = []
    for path in reversed(list_checkpoints(directory)):
        problem = verify(path)
        if problem:
            log(f"checkpoint {path} skipped: {problem}")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a file that passed the digest but still fails to unpickle
            log(f"checkpoint {path} skipped: cannot be loaded ({exc.__class__.__name__}: {exc})")
            continue
        if state.get("format") != FORMAT:
            log(f"checkpoint {path} skipped: unknown format {state.get('format')!r}")
            continue
        if state.get("params_hash") != expected_hash:
            foreign.append(path)
            continue
        return ResumePoint(path, state), foreign
    return None, foreign
