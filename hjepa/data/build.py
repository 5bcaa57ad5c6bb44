"""The prepare stage's work: list the source, decode it in a process pool into a staging file,
split, build and validate the manifest, then write ``data/prepared/`` and ``metrics/data.json``.

Order matters: everything happens inside the temp folder that ``hjepa.core.io.atomic_dir``
swaps in only at the end, so a bad input or a failed check leaves no partial output and keeps
the previous output intact. The source is listed and checked (folder structure, special files,
links) before anything is decoded; every image is decoded exactly once (``hjepa.data.stream``;
with a pool, the parent process meanwhile pays the manifest validation's one-time set-up in a
thread instead of after decoding), and the split arrays are then copied out of the staging file
in bounded blocks, so memory does not grow with the number of images. The output does not
depend on the number of workers.

Params read (all of them, always, so the stage's record matches ``dvc.yaml``): ``seed``,
``data.source``, ``data.path``, ``data.image_size``, ``data.channels``, ``data.split.*``,
``data.conflicting_duplicates``. ``data.path`` is read even for ``digits``, which ignores it: in
``dvc.yaml`` it is the raw-data dependency (``${data.path}``), and its default ``data/raw`` is a
committed folder holding only a README, so the digits pipeline has a real, stable dependency.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hjepa.core.config import Params
from hjepa.core.errors import UserError
from hjepa.core.io import atomic_dir, write_json
from hjepa.core.prepared import RowWriter, images_file, write_index, write_labels
from hjepa.data.cifar import cifar10_source
from hjepa.data.conflicts import conflict_error, conflicting_rows
from hjepa.data.manifest import (
    build_manifest,
    check_arrays,
    validate_manifest,
    warm_up_validation,
)
from hjepa.data.sources import Source, digits_source, image_folder_source
from hjepa.data.split import SPLITS, duplicate_groups, stratified_split
from hjepa.data.stream import Decoded, decode_to_staging, resolve_workers

STAGING_FILE = ".staging_images.raw"  # inside the temp folder; removed before the swap
BLOCK_BYTES = 4 * 2**20  # staging bytes read per block when copying rows out by split


def open_source(source: str, path: str | None) -> Source:
    """The source named by ``data.source``, listed and checked but not yet decoded."""
    if source == "digits":
        return digits_source()
    if path is None:  # the params schema already requires it; kept for direct callers
        raise ValueError(f"data.path is required for data.source '{source}'")
    if source == "image_folder":
        return image_folder_source(path)
    if source == "cifar10":
        return cifar10_source(path)
    raise ValueError(f"unknown data.source '{source}'")


def prepare_dataset(
    params: Params, out_dir: str | Path, metrics_path: str | Path, workers: int | None = None
) -> dict[str, Any]:
    """Build, validate and write the prepared data; return the metrics written.

    ``workers``: decoding processes (None: ``hjepa.data.stream.resolve_workers``).
    """
    seed = params.seed
    data = params.data
    source_name, path = data.source, data.path
    size, channels = data.image_size, data.channels
    fractions = {s: getattr(data.split, s) for s in SPLITS}
    on_conflict = data.conflicting_duplicates
    n_workers = resolve_workers(workers)

    source = open_source(source_name, path)
    with atomic_dir(out_dir) as tmp:
        staging = tmp / STAGING_FILE
        decoded = decode_to_staging(
            source, staging, size, channels, n_workers, warm_up=warm_up_validation
        )
        _require_two_classes(decoded.labels, source)
        groups = duplicate_groups(decoded.hashes)
        conflicts = conflicting_rows(groups, decoded.labels)
        if conflicts.any() and on_conflict == "error":
            raise conflict_error(
                conflicts, groups, decoded.labels, decoded.sources, decoded.hashes,
                source.class_names,
            )  # fmt: skip
        manifest = _manifest(decoded, groups, ~conflicts, source, fractions, seed)
        _write_split_arrays(staging, tmp, manifest, len(decoded.labels), (size, size, channels))
        staging.unlink()
        write_index(tmp, source.class_names, manifest)
    metrics = _metrics(source, manifest, groups[~conflicts], size, channels)
    metrics["conflicting_duplicates_dropped"] = int(conflicts.sum())
    write_json(metrics_path, metrics)
    return metrics


def _require_two_classes(labels: np.ndarray, source: Source) -> None:
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        which = ", ".join(source.class_origins[k] for k in present) or "none"
        raise UserError(
            f"data.source {source.name}: the images are of {len(present)} class ({which}); a "
            "classifier probe needs at least 2 classes"
        )


def _manifest(
    decoded: Decoded,
    groups: np.ndarray,
    keep: np.ndarray,
    source: Source,
    fractions: dict[str, float],
    seed: int,
) -> pd.DataFrame:
    """The validated manifest of the kept images (split by labels and duplicate groups)."""
    kept = np.flatnonzero(keep)
    labels = decoded.labels[kept]
    splits = stratified_split(labels, groups[kept], fractions, seed, source.class_origins)
    manifest = build_manifest(
        kept,
        splits,
        labels,
        source.class_names,
        [decoded.sources[i] for i in kept],
        [decoded.hashes[i] for i in kept],
    )
    validate_manifest(manifest, source.class_names, fractions)
    return manifest


def _write_split_arrays(
    staging: Path, root: Path, manifest: pd.DataFrame, n_rows: int, row_shape: tuple[int, ...]
) -> None:
    """Copy each image's row from ``staging`` (source order) to its split's array.

    One sequential pass over the staging file in blocks: within a split the manifest is in
    source order, so appending each block's rows of that split keeps the manifest's order.
    """
    split_of_row = np.full(n_rows, -1, dtype=np.int8)  # -1: left out (conflicting duplicate)
    index = manifest["index"].to_numpy()
    split_of_row[index] = manifest["split"].map({s: k for k, s in enumerate(SPLITS)}).to_numpy()
    row_bytes = int(np.prod(row_shape))
    block_rows = max(1, BLOCK_BYTES // row_bytes)
    writers = [
        RowWriter(root / images_file(s), int((split_of_row == k).sum()), row_shape, "u1")
        for k, s in enumerate(SPLITS)
    ]
    with open(staging, "rb") as handle:
        for start in range(0, n_rows, block_rows):
            count = min(block_rows, n_rows - start)
            block = np.fromfile(handle, dtype=np.uint8, count=count * row_bytes)
            block = block.reshape(count, *row_shape)
            which = split_of_row[start : start + count]
            for k, writer in enumerate(writers):
                writer.write(block[which == k])
    for writer in writers:
        writer.close()
    for split in SPLITS:
        rows = manifest[manifest["split"] == split]
        labels = rows["label"].to_numpy(dtype=np.int64)
        write_labels(root, split, labels)
        images = np.load(root / images_file(split), mmap_mode="r", allow_pickle=False)
        check_arrays(split, images, labels, len(rows), *row_shape[1:])
        del images


def _metrics(
    source: Source, manifest: pd.DataFrame, groups: np.ndarray, size: int, channels: int
) -> dict[str, Any]:
    group_sizes = Counter(groups.tolist())
    dup_groups = [n for n in group_sizes.values() if n > 1]
    per_class = {
        split: {
            name: int(((manifest["split"] == split) & (manifest["class_name"] == name)).sum())
            for name in source.class_names
        }
        for split in SPLITS
    }
    return {
        "source": source.name,
        "image_shape": [size, size, channels],
        "num_images": len(manifest),
        "num_classes": len(source.class_names),
        "counts": {split: sum(per_class[split].values()) for split in SPLITS},
        "class_counts": per_class,
        "duplicates": {"groups": len(dup_groups), "images": int(sum(dup_groups))},
    }
