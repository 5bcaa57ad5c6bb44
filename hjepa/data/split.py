"""Deterministic, stratified train/val/test split that cannot leak duplicate images.

Policy for identical images (same sha256 of the stored bytes, e.g. two files that are copies, or
two pictures that become equal after resizing): they form one *group*, and a group is assigned to
a split as a whole. Nothing is dropped, and no image can be in two splits. The number of groups
and of images in them goes to ``metrics/data.json``.

Per class (the label of a group's first image), the groups are shuffled with a generator seeded
by ``seed`` and the class's number, then dealt out: val first until it holds
``max(1, round(n·val))`` images, then test likewise, the rest to train, always leaving at least
one group for each later split. So every class is in every split, which needs at least 3
distinct images per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hjepa.core.errors import UserError
from hjepa.core.prepared import SPLITS
from hjepa.core.rounding import round_half_up

__all__ = ["SPLITS", "duplicate_groups", "stratified_split"]


def duplicate_groups(hashes: Sequence[str]) -> np.ndarray:
    """Group id per image: images with equal hashes share an id (ids in first-seen order)."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(h, len(ids)) for h in hashes], dtype=np.int64)


def stratified_split(
    labels: np.ndarray,
    groups: np.ndarray,
    fractions: dict[str, float],
    seed: int,
    class_origins: Sequence[str],
) -> np.ndarray:
    """Split name per image (an array of "train"/"val"/"test"); see the module docstring.

    A class with fewer than 3 images, or fewer than 3 distinct ones, is a UserError naming
    ``class_origins[label]`` and the count.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    out = np.empty(len(labels), dtype=object)
    first_of_group: dict[int, int] = {}
    for i, g in enumerate(groups.tolist()):
        first_of_group.setdefault(g, i)
    group_label = {g: int(labels[i]) for g, i in first_of_group.items()}
    group_size = np.bincount(groups, minlength=len(first_of_group))

    for label in sorted(set(labels.tolist())):
        class_groups = np.array(sorted(g for g, lab in group_label.items() if lab == label))
        n_images = int(group_size[class_groups].sum()) if len(class_groups) else 0
        origin = class_origins[label]
        if not len(class_groups):
            raise UserError(
                f"{origin}: every image of this class is identical to an image of another class "
                "(same pixels, different label); fix the labels or remove the copies."
            )
        if n_images < 3:
            raise UserError(
                f"{origin}: has {n_images} image(s); every class needs at least 3 (one each for "
                "train, val and test). Add images or remove the class."
            )
        if len(class_groups) < 3:
            raise UserError(
                f"{origin}: has {n_images} images but only {len(class_groups)} distinct ones "
                "(identical images must stay in one split); every class needs at least 3 "
                "distinct images."
            )
        rng = np.random.default_rng([seed, label])
        order = class_groups[rng.permutation(len(class_groups))]
        assignment: dict[int, str] = {}
        pos = 0
        for k, split in enumerate(("val", "test")):
            target = max(1, round_half_up(n_images * fractions[split]))
            taken = 0
            later_splits = 2 - k  # groups that must remain for the splits after this one
            while taken < target and len(order) - pos > later_splits:
                assignment[int(order[pos])] = split
                taken += int(group_size[order[pos]])
                pos += 1
        for g in order[pos:]:
            assignment[int(g)] = "train"
        for row in np.flatnonzero(np.isin(groups, class_groups)):
            out[row] = assignment[int(groups[row])]
    return out.astype(str)
