"""Saving torch objects (checkpoints, the encoder) so that the same content gives the same bytes.

``torch.save(obj, path)`` names the records inside its zip archive after the file it writes; an
atomic write goes through a random temp name, so two saves of identical weights differed and DVC
saw a changed encoder (rerunning probe and report after a bitwise-identical resume). Saving to an
open file object names them "archive" every time. The write is atomic and reports a full disk
with the size the tensors need (hjepa.core.io).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hjepa.core.io import write_stream


def tensor_bytes(obj: Any) -> int:
    """Bytes of tensor data in a (nested) dict / list / tuple: about the size a save needs."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically, byte-for-byte reproducible."""
    write_stream(path, lambda fh: torch.save(obj, fh), needed=tensor_bytes(obj) or None)
