"""CIFAR-10 from the official python archive (``cifar-10-python.tar.gz``) or its extracted folder.

Safety, because both the archive and its pickles come from outside:
- every archive member is vetted before anything is read: a name with ``..`` or an absolute path
  is refused outright, and every member must pass tarfile's ``"data"`` extraction filter
  (no links leaving the archive, no devices); members are then read in memory one at a time
  (one batch in memory, not the data set), never extracted;
- the batches are unpickled with an allow-list unpickler that can build only dicts, lists,
  strings, numbers and numpy arrays, so a crafted pickle cannot run code.

The official train/test division is not kept: all six batches are pooled and re-split by the
project's own seeded, stratified split, so CIFAR-10 follows the same ``data.split`` fractions and
leakage rules as every other source. The ``source`` of an image is ``cifar10:<batch>:<i>``.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hjepa.core.errors import UserError
from hjepa.data.images import refuse_special, special_file_kind
from hjepa.data.safe_pickle import SafeUnpickler
from hjepa.data.sources import Chunk, Source, array_chunks

FOLDER = "cifar-10-batches-py"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
META = "batches.meta"


def _unpickle(data: bytes, where: str) -> dict[bytes, Any]:
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any decoding problem is the file's fault, not a bug here
        raise UserError(f"{where}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _vet_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UserError(
            f"{archive}: refusing archive member '{member.name}' (absolute path or '..'); "
            "use the official CIFAR-10 python tarball"
        )
    try:
        tarfile.data_filter(member, "/cifar-extract")
    except tarfile.FilterError as exc:
        raise UserError(
            f"{archive}: refusing archive member '{member.name}' ({exc}); "
            "use the official CIFAR-10 python tarball"
        ) from None


@contextmanager
def _member_reader(path: Path) -> Iterator[Callable[[str], bytes]]:
    """A reader of the batches and meta (by short name), from the tarball or an (extracted)
    folder; every member is vetted and the wanted ones are checked present before any is read.
    One member is read at a time, so memory holds one batch, not the whole data set."""
    wanted = [*BATCHES, META]
    if path.is_dir():
        folder = path / FOLDER if (path / FOLDER).is_dir() else path
        missing = [n for n in wanted if not (folder / n).is_file()]
        if missing:
            raise UserError(
                f"data.path {folder}: not a CIFAR-10 python folder; missing {', '.join(missing)}"
            )
        yield lambda name: (folder / name).read_bytes()
        return
    kind = special_file_kind(os.stat(path).st_mode)
    if kind is not None:  # opening a FIFO would block forever
        raise refuse_special(path, kind)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the `with` below)
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"data.path {path}: not a readable tar archive ({exc})") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UserError(f"data.path {path}: corrupt or truncated tar archive ({exc})") from None
        for member in members:
            _vet_member(member, path)
        by_name = {m.name: m for m in members if m.isfile()}
        missing = [f"{FOLDER}/{n}" for n in wanted if f"{FOLDER}/{n}" not in by_name]
        if missing:
            raise UserError(
                f"data.path {path}: not the CIFAR-10 python tarball; missing member(s) "
                f"{', '.join(missing)}"
            )

        def read(name: str) -> bytes:
            full = f"{FOLDER}/{name}"
            handle = tar.extractfile(by_name[full])
            try:
                return handle.read() if handle else b""
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise UserError(f"{path}: member '{full}' is truncated ({exc})") from None

        yield read


def _batch_arrays(batch: dict[bytes, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise UserError(f"{where}: b'data' must be an N×3072 uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{where}: b'data' rows have {data.shape[1]} values, expected 3072")
    if labels is None or len(labels) != len(data):
        raise UserError(f"{where}: b'labels' must have one label per row of b'data'")
    label_arr = np.asarray(labels, dtype=np.int64)
    if label_arr.size and (label_arr.min() < 0 or label_arr.max() > 9):
        raise UserError(f"{where}: labels must be in 0..9, got {sorted(set(label_arr.tolist()))}")
    return data, label_arr


def cifar10_source(path: str | Path) -> Source:
    """All 60,000 CIFAR-10 images (train and test batches pooled; see module docstring),
    streamed one batch at a time."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data.path {path}: CIFAR-10 tarball or folder not found")
    with _member_reader(path) as read:
        meta = _unpickle(read(META), f"{path}:{META}")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise UserError(f"{path}:{META}: b'label_names' must list the 10 class names")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def chunks() -> Iterator[Chunk]:
        with _member_reader(path) as read:
            for batch_name in BATCHES:
                where = f"{path}:{batch_name}"
                data, labels = _batch_arrays(_unpickle(read(batch_name), where), where)
                chw = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-major → HWC
                sources = [f"cifar10:{batch_name}:{i}" for i in range(len(chw))]
                yield from array_chunks(chw, labels, sources)

    return Source(
        name="cifar10",
        class_names=class_names,
        class_origins=[f"cifar10 class '{n}'" for n in class_names],
        chunks=chunks(),
        count=None,  # known only once every batch is read
    )
