"""Hostile input to prepare (issue 17): one class, the same image in two classes, special files,
links leaving the folder, decompression bombs and 32-bit TIFFs. Each is refused with the file
named (or, for the documented cases, handled), and nothing hangs."""

from __future__ import annotations

import os
import socket
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    load_image_folder,
    make_cifar_members,
    make_folder,
    make_tar,
    save_image,
    tiny_params,
)
from PIL import Image

from hjepa.core.config import parse_params
from hjepa.core.errors import UserError
from hjepa.core.prepared import load_manifest
from hjepa.data.build import prepare_dataset
from hjepa.data.images import open_image


def folder_params(src: Path, **overrides):
    return parse_params(
        tiny_params(**{"data.source": "image_folder", "data.path": str(src), **overrides})
    )


def prepare_folder(tmp_path: Path, src: Path, **overrides):
    return prepare_dataset(
        folder_params(src, **overrides), tmp_path / "out", tmp_path / "m.json", workers=1
    )


# ----------------------------------------------------------------------------- one class
def test_one_class_folder_refused(tmp_path):
    src = tmp_path / "imgs"
    for i in range(6):
        save_image(src / "only" / f"{i}.png", 30 * i, (4, 4), "L")
    with pytest.raises(UserError, match=r"only one class folder \(only\).*at least 2 classes"):
        prepare_folder(tmp_path, src)
    assert not (tmp_path / "out").exists()


def test_one_class_in_cifar_labels_refused(tmp_path):
    import pickle

    members = make_cifar_members(n=4)
    for name, data in list(members.items()):
        if not name.endswith("batches.meta"):
            batch = pickle.loads(data, encoding="bytes")
            batch[b"labels"] = [7] * len(batch[b"labels"])
            members[name] = pickle.dumps(batch, protocol=2)
    tar = make_tar(tmp_path / "c.tar.gz", members)
    p = parse_params(tiny_params(**{"data.source": "cifar10", "data.path": str(tar)}))
    with pytest.raises(UserError, match=r"1 class \(cifar10 class 'class7'\).*at least 2"):
        prepare_dataset(p, tmp_path / "out", tmp_path / "m.json", workers=1)


# ---------------------------------------------------------------- same image, two classes
def _with_conflict(tmp_path: Path) -> Path:
    src = make_folder(tmp_path / "imgs", per_class=5)
    save_image(src / "a_rgb" / "twin.png", (1, 2, 3), (6, 6), "RGB")
    save_image(src / "b_gray" / "twin.png", (1, 2, 3), (6, 6), "RGB")
    return src


def test_same_image_in_two_classes_refused_with_examples(tmp_path):
    src = _with_conflict(tmp_path)
    with pytest.raises(UserError) as info:
        prepare_folder(tmp_path, src, **{"data.channels": 3})
    message = str(info.value)
    assert "same image is in more than one class" in message
    assert f"{src / 'a_rgb' / 'twin.png'} (class 'a_rgb')" in message
    assert f"{src / 'b_gray' / 'twin.png'} (class 'b_gray')" in message
    assert "data.conflicting_duplicates: drop" in message
    assert not (tmp_path / "out").exists()


def test_same_image_in_two_classes_dropped_by_param(tmp_path):
    src = _with_conflict(tmp_path)
    metrics = prepare_folder(
        tmp_path, src, **{"data.channels": 3, "data.conflicting_duplicates": "drop"}
    )
    assert metrics["conflicting_duplicates_dropped"] == 2
    assert metrics["num_images"] == 10
    sources = load_manifest(tmp_path / "out")["source"].tolist()
    assert not [s for s in sources if s.endswith("twin.png")]


def test_conflicting_duplicates_param_validated():
    with pytest.raises(UserError, match="conflicting_duplicates"):
        parse_params(tiny_params(**{"data.conflicting_duplicates": "keep"}))


# --------------------------------------------------------------------------- special files
@pytest.mark.timeout(30)
def test_fifo_named_like_an_image_refused_without_hanging(tmp_path):
    src = make_folder(tmp_path / "imgs")
    fifo = src / "a_rgb" / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"x\.png: a FIFO \(named pipe\), not an image file"):
        prepare_folder(tmp_path, src)
    # Swapped in after the folder was listed: the open itself must not block either.
    with pytest.raises(UserError, match=r"x\.png: a FIFO"):
        open_image(fifo)


@pytest.mark.timeout(30)
def test_fifo_as_cifar_tarball_refused(tmp_path):
    os.mkfifo(tmp_path / "cifar.tar.gz")
    p = parse_params(
        tiny_params(**{"data.source": "cifar10", "data.path": str(tmp_path / "cifar.tar.gz")})
    )
    with pytest.raises(UserError, match=r"cifar\.tar\.gz: a FIFO"):
        prepare_dataset(p, tmp_path / "out", tmp_path / "m.json", workers=1)


def test_socket_refused(tmp_path):
    src = make_folder(tmp_path / "imgs")
    path = src / "b_gray" / "s.png"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(UserError, match=r"s\.png: a socket"):
            load_image_folder(src, 8, 1)
    finally:
        server.close()


def test_device_refused(tmp_path):
    src = make_folder(tmp_path / "imgs")
    path = src / "b_gray" / "dev.png"
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    except (PermissionError, OSError):
        pytest.skip("creating a device node needs privileges this machine does not give")
    with pytest.raises(UserError, match=r"dev\.png: a character device"):
        load_image_folder(src, 8, 1)


# ------------------------------------------------------------------------------ symlinks
def test_symlink_leaving_the_folder_refused(tmp_path):
    src = make_folder(tmp_path / "imgs")
    outside = tmp_path / "elsewhere.png"
    save_image(outside, 99, (4, 4), "L")
    (src / "a_rgb" / "link.png").symlink_to(outside)
    with pytest.raises(UserError, match=r"link\.png: symbolic link to .*elsewhere\.png, outside"):
        load_image_folder(src, 8, 1)


def test_symlinked_class_folder_leaving_the_folder_refused(tmp_path):
    src = make_folder(tmp_path / "imgs")
    make_folder(tmp_path / "other")
    (src / "c_linked").symlink_to(tmp_path / "other" / "a_rgb")
    with pytest.raises(UserError, match=r"c_linked: symbolic link to .*, outside data.path"):
        load_image_folder(src, 8, 1)


def test_symlink_inside_the_folder_followed(tmp_path):
    src = make_folder(tmp_path / "imgs")
    (src / "b_gray" / "alias.png").symlink_to(src / "b_gray" / "0.png")
    raw = load_image_folder(src, 8, 1)
    alias = raw.sources.index(str(src / "b_gray" / "alias.png"))
    original = raw.sources.index(str(src / "b_gray" / "0.png"))
    assert np.array_equal(raw.images[alias], raw.images[original])


def test_broken_symlink_named(tmp_path):
    src = make_folder(tmp_path / "imgs")
    (src / "b_gray" / "gone.png").symlink_to(src / "b_gray" / "missing.png")
    with pytest.raises(UserError, match=r"gone\.png: broken symbolic link"):
        load_image_folder(src, 8, 1)


# ------------------------------------------------------------------ decompression bombs
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def write_huge_png(path: Path, side: int) -> None:
    """A valid 1-bit ``side``×``side`` black PNG, built row by row (a few hundred kB on disk)."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    compressed = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", compressed)
        + _png_chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_with_the_limit(tmp_path):
    src = make_folder(tmp_path / "imgs")
    write_huge_png(src / "a_rgb" / "bomb.png", 30000)
    limit = f"{Image.MAX_IMAGE_PIXELS:,}"
    with pytest.raises(UserError, match=rf"bomb\.png: too large to decode safely.*{limit} pixels"):
        load_image_folder(src, 8, 1)


# --------------------------------------------------------------------- 32-bit TIFF scaling
def _tiff(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="TIFF")
    assert Image.open(path).mode in ("I", "F")
    return path


@pytest.mark.parametrize(
    "array",
    [
        np.arange(64, dtype=np.int32).reshape(8, 8) * 100_000 - 1_000_000,  # "I", beyond 8 bit
        np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8),  # "F", 0..1
    ],
    ids=["int32", "float32"],
)
def test_32bit_tiff_scaled_min_to_max(tmp_path, array):
    src = make_folder(tmp_path / "imgs")
    _tiff(src / "b_gray" / "wide.tif", array)
    raw = load_image_folder(src, 8, 1)
    stored = raw.images[raw.sources.index(str(src / "b_gray" / "wide.tif")), :, :, 0]
    expected = np.rint((array - array.min()) * (255.0 / (array.max() - array.min())))
    assert np.array_equal(stored, expected.astype(np.uint8))  # a ramp, not clipped to white
    assert stored.min() == 0 and stored.max() == 255 and len(np.unique(stored)) > 32


def test_float_tiff_with_nan_refused(tmp_path):
    src = make_folder(tmp_path / "imgs")
    array = np.zeros((8, 8), dtype=np.float32)
    array[2, 3] = np.nan
    _tiff(src / "b_gray" / "nan.tif", array)
    with pytest.raises(UserError, match=r"nan\.tif: float image with NaN or infinite"):
        load_image_folder(src, 8, 1)
