"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

Every result file goes through here: write to a temp file in the same directory, fsync, rename.
A result that is a folder of files that only make sense together (``data/prepared``) is built
in a temp folder beside it and swapped in with one rename (``atomic_dir``).

Two promises beyond atomicity:
- Out of disk space, the error (``DiskFullError``, a UserError) names the path, how much was
  needed or written when the disk filled, and how much is free; the previous file is unchanged.
- A temp file or folder left by a killed run (``.<name>.<random>.tmp``) is removed the next time
  the same target is written. A writer holds an advisory lock (flock) on its temp entry while it
  works, so only entries no live process holds are removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from hjepa.core.errors import UserError

# Below this many free bytes a failed write is taken for a full disk even when the library that
# wrote hid the OSError (torch reports "unexpected pos", numpy "N requested and M written").
LOW_SPACE_BYTES = 1 << 20
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(UserError, OSError):
    """The disk (or quota) filled while writing a result; nothing was replaced."""


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def free_bytes(directory: Path) -> int:
    """Bytes available to this user on the file system holding ``directory``."""
    return shutil.disk_usage(directory).free


def _is_disk_full(exc: BaseException, directory: Path) -> bool:
    """True if ``exc`` (or what caused it) is ENOSPC/EDQUOT, or the disk is now (nearly) full."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in _DISK_FULL:
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    try:
        return free_bytes(directory) < LOW_SPACE_BYTES
    except OSError:
        return False


def _disk_size(path: Path) -> int:
    """Bytes in a file, or in all files below a folder (0 if gone)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_full_error(target: Path, written: int, needed: int | None) -> DiskFullError:
    directory = target.parent
    try:
        free = _size_text(free_bytes(directory))
    except OSError:
        free = "unknown"
    need = (
        f"it needs about {_size_text(needed)}"
        if needed
        else f"it had written {_size_text(written)} when the disk filled"
    )
    return DiskFullError(
        f"no space left on the device writing {target}: {need}; {free} free in {directory}. "
        f"{target} is unchanged (nothing half-written was kept); free some space and rerun"
    )


def _try_lock(fd: int) -> bool:
    """Take the advisory lock on ``fd``; False if another holder has it (or the file system
    has no locks: then nothing is ever taken for stale)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _make_temp(make: Callable[[], Any], target: Path, needed: int | None) -> Any:
    """``make()`` (mkstemp / mkdtemp), with a full disk reported as for the write itself."""
    try:
        return make()
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise disk_full_error(target, 0, needed) from exc
        raise


def remove_stale_temps(directory: Path, name: str | None = None) -> list[Path]:
    """Remove temp entries ``.<name>.*.tmp`` (any name if None) in ``directory`` that no live
    writer holds; returns what was removed."""
    if not directory.is_dir():
        return []
    removed = []
    prefix = f".{name}." if name is not None else "."
    for entry in directory.iterdir():
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        if not _try_lock(fd):  # a live writer holds it: not stale
            os.close(fd)
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


@contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it onto ``path``.

    On an exception the temp file is removed and ``path`` is left as it was; a full disk is
    reported as a DiskFullError (``needed``: the expected size, for the message).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    fd, tmp_name = _make_temp(
        lambda: tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent),
        path,
        needed,
    )
    tmp = Path(tmp_name)
    try:
        _try_lock(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; results are for all to read
        os.replace(tmp, path)
        fsync_path(path.parent)
    except Exception as exc:
        if isinstance(exc, UserError) or not _is_disk_full(exc, path.parent):
            tmp.unlink(missing_ok=True)
            raise
        written = _disk_size(tmp)
        tmp.unlink(missing_ok=True)
        raise disk_full_error(path, written, needed) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(root: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yield an empty temp folder beside ``root``; on success fsync its files and swap it in.

    The previous ``root`` is moved aside first and put back if the final rename fails, so a
    reader sees the old folder or the new one, never a mix. On an exception the temp folder is
    removed and ``root`` is left as it was; a full disk is reported as a DiskFullError.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root.parent, root.name)
    tmp = Path(
        _make_temp(
            lambda: tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent),
            root,
            needed,
        )
    )
    fd = os.open(tmp, os.O_RDONLY)
    old: Path | None = None
    try:
        _try_lock(fd)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private
        yield tmp
        for child in tmp.iterdir():
            fsync_path(child)
        fsync_path(tmp)
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
            os.replace(root, old / root.name)
        try:
            os.replace(tmp, root)
        except BaseException:
            if old is not None:
                os.replace(old / root.name, root)  # put the previous output back
            raise
        fsync_path(root.parent)
    except Exception as exc:
        full = not isinstance(exc, UserError) and _is_disk_full(exc, root.parent)
        written = _disk_size(tmp) if full else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(root, written, needed) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (folders: best effort, not all OSes allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_stream(
    path: str | Path, writer: Callable[[IO[bytes]], Any], needed: int | None = None
) -> None:
    """Call ``writer(file)`` on an open binary temp file and move it onto ``path`` atomically.

    The file object, not a path, reaches the writer: ``torch.save`` then names the archive's
    records "archive" instead of after the temp file, so equal content gives equal bytes.
    """
    with atomic_path(path, needed=needed) as tmp, open(tmp, "wb") as fh:
        writer(fh)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
