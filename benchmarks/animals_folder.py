"""Turn the Animal-Shape silhouettes of the ``animal-mnist`` wheel into an image folder.

Why: issue 9's recipe must not be tuned to digits alone. Animal-Shape (10,000 28×28 grayscale
animal silhouettes, 10 classes × 1,000, MIT licence) is a second real image set that a package
registry serves as a plain file, so it can be fetched by package name and prepared through the
``image_folder`` source like any user's data. This script never downloads anything: fetch the
wheel yourself, then convert it.

    pip download --no-deps animal-mnist==0.4 -d /tmp/wheels
    python benchmarks/animals_folder.py /tmp/wheels/animal_mnist-0.4-py3-none-any.whl /tmp/animals
    python benchmarks/bench_quality.py --data-source image_folder --data-path /tmp/animals

The wheel stores numpy arrays as gzip'd pickles; they are read with the project's
``SafeUnpickler`` (numpy array names only), so a tampered file cannot run code. ``--per-class``
draws a seeded, class-balanced subset (default 200 per class: 2,000 images, the size of digits).
"""

from __future__ import annotations

import gzip
import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from balanced_folder import converter_main, write_balanced  # noqa: E402

from hjepa.data.safe_pickle import SafeUnpickler  # noqa: E402

CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
MEMBERS = (
    "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
    "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz",
)


def _load(wheel: zipfile.ZipFile, member: str) -> np.ndarray:
    raw = gzip.decompress(wheel.read(member))
    array = SafeUnpickler(io.BytesIO(raw)).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{member}: expected a numpy array, found {type(array).__name__}")
    return array


def convert(wheel_path: Path, out: Path, per_class: int, seed: int) -> int:
    """Write ``out/<class>/<index>.png``; returns the number of images written."""
    with zipfile.ZipFile(wheel_path) as wheel:
        images, labels = (_load(wheel, m) for m in MEMBERS)
    images = images.reshape(len(images), 28, 28).astype(np.uint8)
    return write_balanced(images, labels, CLASSES, out, per_class, seed)


def main(argv: list[str] | None = None) -> int:
    return converter_main(
        argv,
        description=__doc__.split("\n")[0],
        source_help="animal_mnist-0.4-py3-none-any.whl",
        classes=CLASSES,
        convert=convert,
        per_class=200,
        errors=(OSError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError),
    )


if __name__ == "__main__":
    sys.exit(main())
