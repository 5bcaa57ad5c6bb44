"""Write a seeded, class-balanced subset of a labelled image array as an image folder.

Why: the benchmark sets that come from a package (Animal-Shape from a wheel, cifar-5k from an
npm tarball) hold more images than a CPU benchmark wants, and two machines must draw the very
same subset. One writer keeps the draw (per class, ``numpy.random.default_rng(seed)``, without
replacement, written in index order as ``out/<class>/<index>.png``) identical for every set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_balanced(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    out: Path,
    per_class: int,
    seed: int,
) -> int:
    """Write ``per_class`` images of each class (label ``k`` is ``classes[k]``); returns the count.
    Raises ValueError, naming the class, when a class has fewer images than asked for."""
    rng = np.random.default_rng(seed)
    written = 0
    for cls, name in enumerate(classes):
        idx = np.flatnonzero(labels == cls)
        if per_class > len(idx):
            raise ValueError(f"--per-class {per_class}: class {name} has only {len(idx)} images")
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in sorted(rng.choice(idx, per_class, replace=False)):
            Image.fromarray(images[i]).save(folder / f"{i}.png")
            written += 1
    return written
