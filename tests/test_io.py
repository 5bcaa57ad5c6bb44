"""Atomic writes under hostile conditions: a full disk, a killed run's leftovers, equal content.

Issue 17: disk full gave raw tracebacks from torch / numpy; a 0-byte temp file left by a kill
stayed forever; saving the same weights twice gave different bytes (so DVC reran probe and report
after a bitwise-identical resume).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_params

import hjepa.core.io as hio
from hjepa.core.config import parse_params
from hjepa.core.errors import UserError
from hjepa.core.io import DiskFullError, atomic_dir, atomic_write, write_json
from hjepa.core.torch_io import save_torch
from hjepa.models.encoder import build_encoder, encoder_arch, save_encoder
from hjepa.train.checkpoint import save_checkpoint


class FillsUp(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails like a full disk."""

    def __init__(self, real: io.RawIOBase, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def close(self) -> None:
        self.real.close()
        super().close()


def _disk_fills_after(monkeypatch, room: int) -> None:
    """Files that hjepa.core.io opens for writing take ``room`` bytes, then ENOSPC."""
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return FillsUp(fh, room) if "w" in mode else fh

    monkeypatch.setattr(hio, "open", fake_open, raising=False)


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_disk_full_in_torch_save_names_path_need_and_free_and_keeps_the_old_file(
    tmp_path, monkeypatch
):
    target = tmp_path / "models" / "encoder_ema.pt"
    weights = {"w": torch.zeros(100_000)}
    save_torch(target, weights)
    before = target.read_bytes()
    _disk_fills_after(monkeypatch, room=1000)
    with pytest.raises(DiskFullError) as info:
        save_torch(target, {"w": torch.ones(100_000)})
    msg = str(info.value)
    assert str(target) in msg and "needs about 390.6 KiB (400000 bytes)" in msg
    assert "free in" in msg and "unexpected pos" not in msg
    assert isinstance(info.value, UserError)
    assert target.read_bytes() == before  # atomicity holds
    assert _temps(target.parent) == []


def test_disk_full_in_a_text_write_says_how_much_was_written(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"old": 1})

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as info:
        atomic_write(target, writer)
    assert "it had written 4.9 KiB (5000 bytes) when the disk filled" in str(info.value)
    assert target.read_text() == '{\n  "old": 1\n}\n'
    assert _temps(tmp_path) == []


def test_numpy_short_write_on_a_full_disk_is_a_disk_full_error(tmp_path, monkeypatch):
    """numpy reports "N requested and M written" with no errno; the free space decides."""
    monkeypatch.setattr(hio, "free_bytes", lambda _d: 0)
    root = tmp_path / "prepared"
    with pytest.raises(DiskFullError) as info, atomic_dir(root, needed=1289216) as tmp:
        np.save(tmp / "x.npy", np.zeros(10))
        raise OSError("1289216 requested and 307072 written")
    assert "needs about 1.2 MiB (1289216 bytes)" in str(info.value) and "0 bytes free" in str(
        info.value
    )
    assert not root.exists() and _temps(tmp_path) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    def writer(tmp: Path) -> None:
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write(tmp_path / "f.txt", writer)


def test_stale_temp_files_of_the_same_target_are_removed_live_ones_kept(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    stale = models / ".encoder_ema.pt.k1ll3d.tmp"
    stale.write_bytes(b"")  # what a kill mid-write leaves
    live = models / ".encoder_ema.pt.wr1t1ng.tmp"
    live.write_bytes(b"")
    other = models / ".other.pt.abc.tmp"
    other.write_bytes(b"")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a writer that is still running
        save_torch(models / "encoder_ema.pt", {"w": torch.zeros(3)})
        assert not stale.exists()
        assert live.exists() and other.exists()
    stale_dir = tmp_path / ".prepared.k1ll3d.tmp"
    stale_dir.mkdir()
    (stale_dir / "x.npy").write_bytes(b"partial")
    with atomic_dir(tmp_path / "prepared") as tmp:
        (tmp / "ok").write_text("1")
    assert not stale_dir.exists() and (tmp_path / "prepared" / "ok").is_file()


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    torch.manual_seed(0)
    tiny = parse_params(tiny_params())
    encoder = build_encoder(encoder_arch(tiny.model, tiny.data))
    save_encoder(tmp_path / "a" / "encoder_ema.pt", encoder, extra={"epochs": 2})
    save_encoder(tmp_path / "b" / "other_name.pt", encoder, extra={"epochs": 2})
    first = (tmp_path / "a" / "encoder_ema.pt").read_bytes()
    assert first == (tmp_path / "b" / "other_name.pt").read_bytes()
    state = {"model": encoder.state_dict(), "epoch": 1}
    one = save_checkpoint(tmp_path / "c1", 1, state, keep=2)
    two = save_checkpoint(tmp_path / "c2", 1, state, keep=2)
    assert one.read_bytes() == two.read_bytes()
    assert os.path.getsize(one) > 0


def test_no_room_for_even_the_temp_file_is_a_disk_full_error(tmp_path, monkeypatch):
    def no_inode(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hio.tempfile, "mkstemp", no_inode)
    with pytest.raises(DiskFullError, match=r"writing .*metrics\.json"):
        write_json(tmp_path / "metrics.json", {"a": 1})
