"""The same image under two labels ("conflicting duplicates").

Two files whose stored images (after resizing to ``data.image_size``) are byte-identical but sit
in different classes cannot both be right; keeping them teaches the probe contradictory labels.
``data.conflicting_duplicates`` says what to do: ``error`` (the default) stops with examples,
like the leakage check; ``drop`` leaves every copy of such an image out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hjepa.core.errors import UserError

_MAX_EXAMPLES = 5


def conflicting_rows(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True for every image whose duplicate group holds more than one label."""
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    low = np.full(n_groups, np.iinfo(np.int64).max)
    high = np.full(n_groups, np.iinfo(np.int64).min)
    np.minimum.at(low, groups, labels)
    np.maximum.at(high, groups, labels)
    return np.asarray(low[groups] != high[groups], dtype=bool)


def conflict_error(
    rows: np.ndarray,
    groups: np.ndarray,
    labels: np.ndarray,
    sources: Sequence[str],
    hashes: Sequence[str],
    class_names: Sequence[str],
) -> UserError:
    """The error listing a few conflicting images (``rows``: ``conflicting_rows``' mask)."""
    examples: list[str] = []
    by_group: dict[int, list[int]] = {}
    for i in np.flatnonzero(rows).tolist():
        by_group.setdefault(int(groups[i]), []).append(i)
    for members in list(by_group.values())[:_MAX_EXAMPLES]:
        places = [f"{sources[i]} (class '{class_names[int(labels[i])]}')" for i in members[:3]]
        examples.append(f"  - same image {hashes[members[0]][:12]}… in {' and '.join(places)}")
    if len(by_group) > len(examples):
        examples.append(f"  - ... {len(by_group)} such images ({int(rows.sum())} files) in all")
    return UserError(
        "the same image is in more than one class (identical after resizing to "
        "data.image_size, different labels):\n"
        + "\n".join(examples)
        + "\nFix the labels or remove the copies, or set data.conflicting_duplicates: drop to "
        "leave every copy of such an image out."
    )
