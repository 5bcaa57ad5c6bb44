"""Raw sources → a ``Source``: class names and a stream of ``Chunk``s of images to convert.

Three sources (``data.source``): scikit-learn's bundled digits (no download), an image folder
``root/<class_name>/<image file>``, and the CIFAR-10 python tarball (``hjepa.data.cifar``).

Why chunks and not one array: a real data set does not fit in memory. A chunk carries what a
worker process needs to produce a few hundred stored images (file paths, or raw pixel arrays for
sources that come decoded) plus their labels and provenance, which stay in the main process.
``convert(payload, size, channels)`` is a module-level function (so it can be sent to a worker)
that returns the chunk's images in stored form through ``hjepa.data.images.to_stored``, so the
sources differ only in data.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hjepa.core.errors import UserError
from hjepa.data.images import (
    IMAGE_SUFFIXES,
    decode_file,
    refuse_special,
    special_file_kind,
    to_stored,
)

CHUNK_IMAGES = 128  # images per worker task: large enough to hide the task overhead

Convert = Callable[[Any, int, int], np.ndarray]


@dataclass(frozen=True)
class Chunk:
    """``convert(payload, size, channels)`` gives ``len(labels)`` stored images."""

    convert: Convert
    payload: Any
    labels: np.ndarray  # int64, in 0..K-1
    sources: list[str]  # a file path, "digits:<i>" or "cifar10:<batch>:<i>" per image


@dataclass(frozen=True)
class Source:
    """A source's classes and its images as a stream of chunks (in a fixed order).

    ``class_origins[k]`` says where class k came from in words a user recognises (its folder for
    an image folder), so that errors about a class can name it.
    """

    name: str  # the data.source name
    class_names: list[str]
    class_origins: list[str]
    chunks: Iterator[Chunk]  # consumed once, by the prepare run that opened the source
    count: int | None = None  # images, when known before decoding (for the progress bar)


def convert_arrays(arrays: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Already decoded uint8 images (N×H×W or N×H×W×3) in stored form."""
    return np.stack([to_stored(Image.fromarray(a), size, channels) for a in arrays])


def decode_files(paths: Sequence[str], size: int, channels: int) -> np.ndarray:
    """Image files in stored form (see ``hjepa.data.images.decode_file``)."""
    return np.stack([decode_file(Path(p), size, channels) for p in paths])


def array_chunks(arrays: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> Iterator[Chunk]:
    """Chunks of already decoded images (digits, a CIFAR-10 batch)."""
    for start in range(0, len(arrays), CHUNK_IMAGES):
        stop = start + CHUNK_IMAGES
        yield Chunk(
            convert_arrays,
            np.ascontiguousarray(arrays[start:stop]),
            np.asarray(labels[start:stop], dtype=np.int64),
            list(sources[start:stop]),
        )


def digits_source() -> Source:
    """scikit-learn's 1,797 8×8 digits; pixel values 0..16 are scaled to 0..255."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    raw = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    names = [str(int(n)) for n in bunch.target_names]
    sources = [f"digits:{i}" for i in range(len(raw))]
    return Source(
        name="digits",
        class_names=names,
        class_origins=[f"digits class '{n}'" for n in names],
        chunks=array_chunks(raw, bunch.target, sources),
        count=len(raw),
    )


# ------------------------------------------------------------------------------ image folder
def _visible_entries(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _vetted_is_dir(entry: os.DirEntry[str], root: Path) -> bool:
    """Whether what ``entry`` is (links followed) is a folder, after the folder's safety rules:
    a symbolic link must stay inside ``root`` (the resolved ``data.path``) and must not be
    broken; FIFOs, sockets and devices are refused, never opened.

    A plain file or folder is known from the listing itself (the directory entry's type, no
    system call on most file systems): at 10^6 images a ``stat`` per file is seconds of serial
    time before decoding starts. Only links and entries of unknown or special type are ``stat``ed.
    """
    if entry.is_file(follow_symlinks=False):
        return False
    if entry.is_dir(follow_symlinks=False):
        return True
    path = Path(entry.path)
    if entry.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            raise UserError(
                f"{path}: symbolic link to {target}, outside data.path {root}; links that leave "
                "the image folder are refused (the folder DVC tracks must hold the data). Copy "
                "the file in or point data.path at a folder that holds it"
            )
        if not target.exists():
            raise UserError(f"{path}: broken symbolic link (to {target}); fix or remove it")
    info = os.stat(path)
    kind = special_file_kind(info.st_mode)
    if kind is not None:
        raise refuse_special(path, kind)
    return stat.S_ISDIR(info.st_mode)


def _class_folders(root: Path, resolved: Path) -> list[Path]:
    folders = []
    for entry in _visible_entries(root):
        path = Path(entry.path)
        if _vetted_is_dir(entry, resolved):
            folders.append(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            raise UserError(
                f"{path}: image directly under data.path; put every image in a class folder "
                f"{root}/<class_name>/"
            )
    if not folders:
        raise UserError(f"data.path {root}: no class folders (expected root/<class_name>/<image>)")
    if len(folders) == 1:
        raise UserError(
            f"data.path {root}: only one class folder ({folders[0].name}); a classifier needs "
            "at least 2 classes, each in its own folder root/<class_name>/"
        )
    return folders


def _class_files(folder: Path, resolved: Path) -> list[str]:
    files = []
    for entry in _visible_entries(folder):
        if _vetted_is_dir(entry, resolved):
            raise UserError(
                f"{entry.path}: nested folder inside class folder {folder}; a class folder "
                "must hold image files only"
            )
        files.append(entry.path)
    if not files:
        raise UserError(f"{folder}: class folder is empty (every class needs images)")
    return files


def image_folder_source(root: str | Path) -> Source:
    """``root/<class_name>/<image file>``; class names sorted → labels 0..K-1.

    The whole folder is listed and checked before anything is decoded. Hidden entries (names
    starting with '.') are skipped everywhere. Inside a class folder every other entry must be a
    decodable image (a non-image or corrupt file is an error naming it, as is a nested folder).
    Directly under ``root``, image files are an error (they belong to no class) and other files,
    such as a README, are ignored. Symbolic links are followed only while they stay inside
    ``root``; special files (FIFO, socket, device) are refused anywhere.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"data.path {root}: image folder not found")
    if not root.is_dir():
        raise UserError(
            f"data.path {root}: expected a folder root/<class_name>/<image file>, got a file"
        )
    resolved = root.resolve()
    folders = _class_folders(root, resolved)
    paths: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = _class_files(folder, resolved)
        paths += files
        labels += [label] * len(files)
    label_array = np.asarray(labels, dtype=np.int64)

    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(paths), CHUNK_IMAGES):
            part = paths[start : start + CHUNK_IMAGES]
            yield Chunk(decode_files, part, label_array[start : start + len(part)], part)

    return Source(
        name="image_folder",
        class_names=[d.name for d in folders],
        class_origins=[str(d) for d in folders],
        chunks=chunks(),
        count=len(paths),
    )
