"""Write a seeded, class-balanced subset of a labelled image array as an image folder.

Why: the benchmark sets that come from a package (Animal-Shape from a wheel, cifar-5k from an
npm tarball) hold more images than a CPU benchmark wants, and two machines must draw the very
same subset. One writer keeps the draw (per class, ``numpy.random.default_rng(seed)``, without
replacement, written in index order as ``out/<class>/<index>.png``) identical for every set, and
one command line (``converter_main``) gives every converter the same arguments and errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
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


def converter_main(
    argv: list[str] | None,
    *,
    description: str,
    source_help: str,
    classes: Sequence[str],
    convert: Callable[[Path, Path, int, int], int],
    per_class: int,
    errors: tuple[type[BaseException], ...],
) -> int:
    """``SOURCE OUT [--per-class N] [--seed S]``: run ``convert(source, out, per_class, seed)``;
    an error in ``errors`` is printed as one line naming the source (exit 2), never a traceback."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("source", type=Path, help=source_help)
    parser.add_argument("out", type=Path, help="image folder to create (class subfolders)")
    parser.add_argument("--per-class", type=int, default=per_class)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        n = convert(args.source, args.out, args.per_class, args.seed)
    except errors as exc:
        print(f"error: {args.source}: {exc}", file=sys.stderr)
        return 2
    print(f"{n} images in {len(classes)} classes under {args.out}")
    return 0
