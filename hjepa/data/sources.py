"""Raw sources → one in-memory ``RawImages`` (stored-form images, labels, provenance).

Three sources (``data.source``): scikit-learn's bundled digits (no download), an image folder
``root/<class_name>/<image file>``, and the CIFAR-10 python tarball (``hjepa.data.cifar``).
Every image is converted by ``hjepa.data.images.to_stored`` so the sources differ only in data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from hjepa.core.errors import UserError
from hjepa.data.images import IMAGE_SUFFIXES, open_image, to_stored


@dataclass(frozen=True)
class RawImages:
    """A whole source in stored form, before splitting.

    ``class_origins[k]`` says where class k came from in words a user recognises (its folder for
    an image folder), so that errors about a class can name it.
    """

    images: np.ndarray  # uint8 N×H×W×C
    labels: np.ndarray  # int64 N, in 0..K-1
    sources: list[str]  # one per image: a file path, "digits:<i>" or "cifar10:<batch>:<i>"
    class_names: list[str]
    class_origins: list[str]
    source: str  # the data.source name


def load_digits(size: int, channels: int) -> RawImages:
    """scikit-learn's 1,797 8×8 digits; pixel values 0..16 are scaled to 0..255."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    raw = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.stack(
        [
            to_stored(Image.fromarray(im), size, channels)
            for im in tqdm(raw, desc="digits", unit="img")
        ]
    )
    names = [str(int(n)) for n in bunch.target_names]
    return RawImages(
        images=images,
        labels=bunch.target.astype(np.int64),
        sources=[f"digits:{i}" for i in range(len(raw))],
        class_names=names,
        class_origins=[f"digits class '{n}'" for n in names],
        source="digits",
    )


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def load_image_folder(root: str | Path, size: int, channels: int) -> RawImages:
    """``root/<class_name>/<image file>``; class names sorted → labels 0..K-1.

    Hidden entries (names starting with '.') are skipped everywhere. Inside a class folder every
    other entry must be a decodable image (a non-image or corrupt file is an error naming it, as
    is a nested folder). Directly under ``root``, image files are an error (they belong to no
    class) and other files, such as a README, are ignored.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"data.path {root}: image folder not found")
    if not root.is_dir():
        raise UserError(
            f"data.path {root}: expected a folder root/<class_name>/<image file>, got a file"
        )
    class_dirs = []
    for entry in sorted(root.iterdir()):
        if not _visible(entry):
            continue
        if entry.is_dir():
            class_dirs.append(entry)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            raise UserError(
                f"{entry}: image directly under data.path; put every image in a class folder "
                f"{root}/<class_name>/"
            )
    if not class_dirs:
        raise UserError(f"data.path {root}: no class folders (expected root/<class_name>/<image>)")

    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        entries = [e for e in sorted(class_dir.iterdir()) if _visible(e)]
        for entry in entries:
            if entry.is_dir():
                raise UserError(
                    f"{entry}: nested folder inside class folder {class_dir}; a class folder "
                    "must hold image files only"
                )
        if not entries:
            raise UserError(f"{class_dir}: class folder is empty (every class needs images)")
        files += [(entry, label) for entry in entries]

    images = []
    for path, _ in tqdm(files, desc="images", unit="img"):
        with open_image(path) as image:
            images.append(to_stored(image, size, channels))
    return RawImages(
        images=np.stack(images),
        labels=np.array([label for _, label in files], dtype=np.int64),
        sources=[str(path) for path, _ in files],
        class_names=[d.name for d in class_dirs],
        class_origins=[str(d) for d in class_dirs],
        source="image_folder",
    )
