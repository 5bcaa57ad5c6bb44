"""``data/prepared/``: writing it as a whole, and the reader API used by pretraining and probe.

Layout: per split ``<split>_images.npy`` (uint8 N×H×W×C, memory-mappable) and
``<split>_labels.npy`` (int64 N), ``classes.json`` (class names, index = label) and
``manifest.csv`` (see ``hjepa.data.manifest``).

Why the whole folder is swapped in one rename: the files only make sense together (a manifest
from one run with arrays from another would silently mislabel images). The writer
(``hjepa.data.build``) builds the new folder inside ``hjepa.core.io.atomic_dir`` beside the old
one, streaming the image arrays in row blocks (``RowWriter``); on any failure the temp folder is
removed and the previous output is untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hjepa.core.errors import UserError
from hjepa.core.io import atomic_dir

PREPARED_DIR = Path("data/prepared")
CLASSES_FILE = "classes.json"
MANIFEST_FILE = "manifest.csv"
SPLITS = ("train", "val", "test")  # the order of the manifest, the metrics and the report


def images_file(split: str) -> str:
    return f"{split}_images.npy"


def labels_file(split: str) -> str:
    return f"{split}_labels.npy"


def expected_files() -> list[str]:
    """Every file a complete ``data/prepared`` holds."""
    per_split = [f(s) for s in SPLITS for f in (images_file, labels_file)]
    return [*per_split, CLASSES_FILE, MANIFEST_FILE]


class RowWriter:
    """Writes one ``.npy`` array of known shape row block by row block, without holding it.

    The header is the one ``np.save`` writes (format 1.0), so the file is byte-identical to
    saving the whole array at once; ``close`` refuses a row count other than the declared one.
    """

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...], dtype: str) -> None:
        self.path, self.rows, self.written = path, rows, 0
        self.handle = open(path, "wb")  # noqa: SIM115 (closed in close())
        header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (rows, *row_shape)}
        np.lib.format.write_array_header_1_0(self.handle, header)
        self.row_shape, self.dtype = row_shape, np.dtype(dtype)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.row_shape or block.dtype != self.dtype:
            raise ValueError(f"{self.path}: block {block.dtype} {block.shape} does not fit")
        self.handle.write(np.ascontiguousarray(block).tobytes())
        self.written += len(block)

    def close(self) -> None:
        self.handle.close()
        if self.written != self.rows:
            raise ValueError(f"{self.path}: wrote {self.written} rows, declared {self.rows}")


def write_labels(root: Path, split: str, labels: np.ndarray) -> None:
    np.save(root / labels_file(split), labels.astype(np.int64), allow_pickle=False)


def write_index(root: Path, class_names: list[str], manifest: pd.DataFrame) -> None:
    """``classes.json`` and ``manifest.csv``."""
    (root / CLASSES_FILE).write_text(json.dumps(list(class_names), indent=2) + "\n")
    manifest.to_csv(root / MANIFEST_FILE, index=False, lineterminator="\n")


def write_prepared(
    root: str | Path,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    manifest: pd.DataFrame,
) -> None:
    """Write in-memory arrays (``arrays[split] = (images, labels)``) as a whole folder,
    atomically; for small data built in memory (tests, fixtures). The caller has validated it."""
    with atomic_dir(root) as tmp:
        for split in SPLITS:
            images, labels = arrays[split]
            writer = RowWriter(tmp / images_file(split), len(images), images.shape[1:], "u1")
            writer.write(images.astype(np.uint8, copy=False))
            writer.close()
            write_labels(tmp, split, labels)
        write_index(tmp, class_names, manifest)


def _require(root: Path, names: list[str]) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        state = "missing" if not root.is_dir() else f"incomplete (no {', '.join(missing)})"
        raise UserError(f"{root}: prepared data is {state}; run `dvc repro prepare`")


def load_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N×H×W×C, memory-mapped read-only; labels int64 N) of one split."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    _require(root, expected_files())
    try:
        images = np.load(root / images_file(split), mmap_mode="r", allow_pickle=False)
        labels = np.load(root / labels_file(split), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(
            f"{root}: cannot read the {split} arrays ({exc}); run `dvc repro prepare`"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise UserError(
            f"{root}: {split} arrays are inconsistent (images {images.dtype} {images.shape}, "
            f"labels {labels.shape}); run `dvc repro prepare`"
        )
    return images, labels.astype(np.int64, copy=False)


def class_names(root: str | Path) -> list[str]:
    """Class names, index = label."""
    root = Path(root)
    _require(root, expected_files())
    try:
        names = json.loads((root / CLASSES_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{root / CLASSES_FILE}: not valid JSON ({exc}); run `dvc repro prepare`"
        ) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{root / CLASSES_FILE}: expected a list of class names")
    return names


def load_manifest(root: str | Path) -> pd.DataFrame:
    """The manifest, with the dtypes it was validated with."""
    root = Path(root)
    _require(root, expected_files())
    return pd.read_csv(
        root / MANIFEST_FILE,
        dtype={
            "index": np.int64,
            "label": np.int64,
            "split": str,
            "class_name": str,
            "source": str,
            "sha256": str,
        },
        keep_default_na=False,
    )
