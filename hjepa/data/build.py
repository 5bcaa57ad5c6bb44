"""The prepare stage's work: load the source, split, build and validate the manifest, then write
``data/prepared/`` (atomically, as a whole) and ``metrics/data.json``.

Order matters: everything is computed and validated in memory first, so a bad input or a failed
check leaves no partial output and keeps the previous output intact.

Params read (all of them, always, so the stage's record matches ``dvc.yaml``): ``seed``,
``data.source``, ``data.path``, ``data.image_size``, ``data.channels``, ``data.split.*``.
``data.path`` is read even for ``digits``, which ignores it: in ``dvc.yaml`` it is the raw-data
dependency (``${data.path}``), and its default ``data/raw`` is a committed folder holding only a
README, so the digits pipeline has a real, stable dependency path.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hjepa.core.config import Params
from hjepa.core.io import write_json
from hjepa.core.prepared import write_prepared
from hjepa.data.cifar import load_cifar10
from hjepa.data.images import image_hash
from hjepa.data.manifest import build_manifest, check_arrays, validate_manifest
from hjepa.data.sources import RawImages, load_digits, load_image_folder
from hjepa.data.split import SPLITS, duplicate_groups, stratified_split


def load_source(source: str, path: str | None, size: int, channels: int) -> RawImages:
    """The raw images of ``data.source`` in stored form."""
    if source == "digits":
        return load_digits(size, channels)
    if path is None:  # the params schema already requires it; kept for direct callers
        raise ValueError(f"data.path is required for data.source '{source}'")
    if source == "image_folder":
        return load_image_folder(path, size, channels)
    if source == "cifar10":
        return load_cifar10(path, size, channels)
    raise ValueError(f"unknown data.source '{source}'")


def prepare_dataset(
    params: Params, out_dir: str | Path, metrics_path: str | Path
) -> dict[str, Any]:
    """Build, validate and write the prepared data; return the metrics written."""
    seed = params.seed
    data = params.data
    source, path = data.source, data.path
    size, channels = data.image_size, data.channels
    fractions = {s: getattr(data.split, s) for s in SPLITS}

    raw = load_source(source, path, size, channels)
    hashes = [image_hash(im) for im in raw.images]
    groups = duplicate_groups(hashes)
    splits = stratified_split(raw.labels, groups, fractions, seed, raw.class_origins)

    manifest = build_manifest(
        np.arange(len(raw.labels)), splits, raw.labels, raw.class_names, raw.sources, hashes
    )
    validate_manifest(manifest, raw.class_names, fractions)

    arrays = {}
    for split in SPLITS:
        rows = manifest.index[manifest["split"] == split]
        order = manifest.loc[rows, "index"].to_numpy()
        images, labels = raw.images[order], raw.labels[order]
        check_arrays(split, images, labels, len(order), size, channels)
        arrays[split] = (images, labels)

    write_prepared(out_dir, arrays, raw.class_names, manifest)
    metrics = _metrics(raw, manifest, groups, size, channels)
    write_json(metrics_path, metrics)
    return metrics


def _metrics(
    raw: RawImages, manifest: Any, groups: np.ndarray, size: int, channels: int
) -> dict[str, Any]:
    group_sizes = Counter(groups.tolist())
    dup_groups = [n for n in group_sizes.values() if n > 1]
    per_class = {
        split: {
            name: int(((manifest["split"] == split) & (manifest["class_name"] == name)).sum())
            for name in raw.class_names
        }
        for split in SPLITS
    }
    return {
        "source": raw.source,
        "image_shape": [size, size, channels],
        "num_images": len(manifest),
        "num_classes": len(raw.class_names),
        "counts": {split: sum(per_class[split].values()) for split in SPLITS},
        "class_counts": per_class,
        "duplicates": {"groups": len(dup_groups), "images": int(sum(dup_groups))},
    }
