"""Training checkpoints that can be trusted: atomic, verified, params-bound, pruned.

A checkpoint ``ckpt_epochNNNN.pt`` is written atomically (temp file, fsync, rename), then its
sidecar ``ckpt_epochNNNN.pt.sha256`` (digest and size) the same way. A checkpoint counts only if
its sidecar exists and matches: a run killed mid-write leaves at most a temp file (removed on the
next start) or a checkpoint without a sidecar (skipped). Each checkpoint carries the hash of the
params that shape training; one written under other params is never resumed, and is not deleted
either until the new run has proved itself: it is set aside in ``.superseded/`` and removed only
once the new run has written its own first checkpoint (a run that fails earlier loses nothing,
and going back to the old params resumes from them).
Everything loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hjepa.core.io import remove_stale_temps, write_text
from hjepa.core.torch_io import save_torch

FORMAT = "hjepa-checkpoint/1"
_NAME = re.compile(r"^ckpt_epoch(\d{4,})\.pt$")
SUPERSEDED = ".superseded"  # checkpoints of other params, kept until this run has its first


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
    save_torch(path, {"format": FORMAT, **state})
    write_text(Path(f"{path}.sha256"), f"{_digest(path)} {path.stat().st_size}\n")
    for old in list_checkpoints(directory)[:-keep]:
        _remove(old)
    shutil.rmtree(directory / SUPERSEDED, ignore_errors=True)  # this run now has its own
    return path


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.sha256").unlink(missing_ok=True)


def set_aside(directory: Path, checkpoints: list[Path]) -> Path:
    """Move ``checkpoints`` (with sidecars) into ``directory/.superseded``; returns that folder.

    They are deleted by the next ``save_checkpoint`` (the new run's first checkpoint), or put
    back by ``restore_set_aside`` if the run that set them aside never got that far.
    """
    aside = directory / SUPERSEDED
    aside.mkdir(parents=True, exist_ok=True)
    for path in checkpoints:
        for part in (path, Path(f"{path}.sha256")):
            if part.exists():
                os.replace(part, aside / part.name)
    return aside


def restore_set_aside(directory: Path) -> list[Path]:
    """Undo an earlier ``set_aside`` whose run wrote no checkpoint of its own; returns the
    checkpoints put back (none if the folder has its own checkpoints: then the set-aside ones
    are stale and removed, as that run would have done)."""
    aside = directory / SUPERSEDED
    if not aside.is_dir():
        return []
    if any(verify(p) is None for p in list_checkpoints(directory)):
        shutil.rmtree(aside, ignore_errors=True)
        return []
    for part in aside.iterdir():
        os.replace(part, directory / part.name)
    aside.rmdir()
    return list_checkpoints(directory)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first (by epoch number)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Temp files left by a run killed mid-write (none that a live writer holds)."""
    return remove_stale_temps(directory)


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
