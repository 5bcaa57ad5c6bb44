"""Sources: digits, image folders (PNG/JPEG, gray/RGB, any size), CIFAR-10 tarball and folder,
and every kind of bad input named in a UserError."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    load_cifar10,
    load_digits,
    load_image_folder,
    make_cifar_members,
    make_folder,
    make_tar,
    save_image,
)
from PIL import Image

from hjepa.core.errors import UserError
from hjepa.data.sources import image_folder_source


# ------------------------------------------------------------------------------------ digits
def test_digits_scaled_to_uint8_and_resized():
    gray = load_digits(8, 1)
    assert gray.images.shape == (1797, 8, 8, 1) and gray.images.dtype == np.uint8
    assert gray.images.max() == 255  # 16 → 255, not left at 0..16
    assert gray.class_names == [str(k) for k in range(10)]
    assert gray.sources[5] == "digits:5"
    rgb = load_digits(12, 3)
    assert rgb.images.shape == (1797, 12, 12, 3)
    assert np.array_equal(rgb.images[..., 0], rgb.images[..., 2])


# ------------------------------------------------------------------------------ image folder
def test_image_folder_png_jpeg_gray_rgb(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "README.md").write_text("ignored")
    (root / "a_rgb" / ".DS_Store").write_bytes(b"\0junk")
    raw = load_image_folder(root, 6, 3)
    assert raw.class_names == ["a_rgb", "b_gray"]  # sorted → labels
    assert raw.images.shape == (8, 6, 6, 3)
    assert raw.labels.tolist() == [0] * 4 + [1] * 4
    assert raw.sources[0] == str(root / "a_rgb" / "0.jpg")
    red = raw.images[0, 3, 3]
    assert red[0] > 180 and red[2] < 30  # JPEG colour kept
    gray_as_rgb = raw.images[5, 3, 3]
    assert gray_as_rgb[0] == gray_as_rgb[1] == gray_as_rgb[2] == 50
    gray = load_image_folder(root, 4, 1)
    assert gray.images.shape == (8, 4, 4, 1)
    # Pure red in "L" is 0.299 * 200 ≈ 60 (JPEG noise allowed).
    assert abs(int(gray.images[0, 2, 2, 0]) - 60) <= 4


def test_image_folder_missing_path(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_image_folder(tmp_path / "nope", 8, 1)


def test_empty_class_folder_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "c_empty").mkdir()
    with pytest.raises(UserError, match=r"c_empty: class folder is empty"):
        load_image_folder(root, 8, 1)


def test_corrupt_image_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    bad = root / "b_gray" / "truncated.png"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])  # valid header, cut data
    with pytest.raises(UserError, match=r"truncated\.png: corrupt or truncated"):
        load_image_folder(root, 8, 1)


def test_non_image_file_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "a_rgb" / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"notes\.txt: not a readable image"):
        load_image_folder(root, 8, 1)


def test_image_outside_class_folder_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    save_image(root / "stray.png", 3, (4, 4), "L")
    with pytest.raises(UserError, match=r"stray\.png: image directly under data.path"):
        load_image_folder(root, 8, 1)


def test_folder_inside_a_class_folder_named_and_linked_folders_followed(tmp_path):
    """Folders are told from files by the listing's entry type (no stat per file): a nested
    folder must still be refused, and a class folder that is a link inside the root still
    counts as a class."""
    root = make_folder(tmp_path / "imgs")
    (root / "c_linked").symlink_to(root / "b_gray", target_is_directory=True)
    assert image_folder_source(root).class_names == ["a_rgb", "b_gray", "c_linked"]
    (root / "a_rgb" / "more").mkdir()
    with pytest.raises(UserError, match=r"a_rgb/more: nested folder inside class folder"):
        load_image_folder(root, 8, 1)


# ----------------------------------------------------------------------------------- cifar10
def test_cifar_tarball_pooled_channel_major(tmp_path):
    members = make_cifar_members(n=5)
    raw = load_cifar10(make_tar(tmp_path / "c.tar.gz", members), 32, 3)
    assert raw.images.shape == (30, 32, 32, 3)
    assert raw.class_names == [f"class{k}" for k in range(10)]
    assert raw.sources[0] == "cifar10:data_batch_1:0" and raw.sources[-1] == "cifar10:test_batch:4"
    assert raw.labels.tolist() == [i % 10 for i in range(30)]
    data = pickle.loads(members["cifar-10-batches-py/data_batch_2"], encoding="bytes")[b"data"]
    # channel-major rows: R plane, then G, then B; pixel (row 1, col 2) of image 5 (batch 2, 0)
    px = [data[0][c * 1024 + 1 * 32 + 2] for c in range(3)]
    assert raw.images[5, 1, 2].tolist() == px
    small = load_cifar10(tmp_path / "c.tar.gz", 8, 1)
    assert small.images.shape == (30, 8, 8, 1)


def test_cifar_extracted_folder(tmp_path):
    members = make_cifar_members(n=3)
    for name, data in members.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    a = load_cifar10(tmp_path, 8, 3)  # parent of cifar-10-batches-py
    b = load_cifar10(tmp_path / "cifar-10-batches-py", 8, 3)
    assert a.images.shape == (18, 8, 8, 3) and np.array_equal(a.images, b.images)


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil.txt", "cifar-10-batches-py/../../x"])
def test_cifar_traversal_member_refused(tmp_path, evil):
    members = make_cifar_members(n=1)
    members[evil] = b"boom"
    tar = make_tar(tmp_path / "c.tar.gz", members)
    with pytest.raises(UserError, match=f"refusing archive member '{evil}'"):
        load_cifar10(tar, 8, 1)


def test_cifar_link_leaving_archive_refused(tmp_path):
    tar_path = make_tar(tmp_path / "c.tar", make_cifar_members(n=1), mode="w")
    with tarfile.open(tar_path, "a") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError, match="refusing archive member 'cifar-10-batches-py/link'"):
        load_cifar10(tar_path, 8, 1)


def test_cifar_missing_member_named(tmp_path):
    members = make_cifar_members(n=1)
    del members["cifar-10-batches-py/data_batch_3"]
    with pytest.raises(UserError, match="missing member.*data_batch_3"):
        load_cifar10(make_tar(tmp_path / "c.tar.gz", members), 8, 1)


def test_cifar_not_a_tarball(tmp_path):
    path = tmp_path / "cifar.tar.gz"
    path.write_text("not a tar")
    with pytest.raises(UserError, match="not a readable tar archive"):
        load_cifar10(path, 8, 1)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar_malicious_pickle_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    members = make_cifar_members(n=1)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": _Exploit(marker)})
    with pytest.raises(UserError, match=r"refused to load '\w+\.open'"):
        load_cifar10(make_tar(tmp_path / "c.tar.gz", members), 8, 1)
    assert not marker.exists()
