"""The manifest (one row per stored image) and the pandera schema that must pass before any
output is written.

Columns: ``index`` (the image's position in the source, unique), ``split``, ``label``,
``class_name``, ``source`` (file path, ``digits:<i>`` or ``cifar10:<batch>:<i>``) and ``sha256``
(of the stored image bytes). Rows are ordered by split (train, val, test) and, within a split,
in the order of that split's arrays: the k-th ``train`` row describes ``train_images[k]``.

Why a schema and not a few asserts: pandera checks everything at once (``lazy=True``) and
reports every failing check, which is summarised here into one readable error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from hjepa.core.errors import UserError
from hjepa.core.prepared import SPLITS

COLUMNS = ["index", "split", "label", "class_name", "source", "sha256"]
_MAX_EXAMPLES = 5


def build_manifest(
    indices: np.ndarray,
    splits: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    sources: Sequence[str],
    hashes: Sequence[str],
) -> pd.DataFrame:
    """Manifest rows ordered by split, then by source index (the order of the split arrays)."""
    frame = pd.DataFrame(
        {
            "index": np.asarray(indices, dtype=np.int64),
            "split": [str(s) for s in splits],
            "label": np.asarray(labels, dtype=np.int64),
            "class_name": [class_names[int(k)] for k in labels],
            "source": list(sources),
            "sha256": list(hashes),
        }
    )
    order = {s: i for i, s in enumerate(SPLITS)}
    frame["_order"] = frame["split"].map(order)
    frame = frame.sort_values(["_order", "index"], kind="stable").drop(columns="_order")
    return frame.reset_index(drop=True)


def split_tolerance(frame: pd.DataFrame, n_classes: int) -> float:
    """How far (as a fraction of all images) a split may be from its ``data.split`` fraction.

    The stratified split rounds per class, forces one group per class into every split, and
    moves identical images as a group; each costs at most about ``2·(largest group + 1)`` images
    per class and split. Anything beyond that means the splits are not the requested ones.
    """
    if frame.empty:
        return 0.0
    largest_group = int(frame["sha256"].value_counts().max())
    return 2 * (largest_group + 1) * n_classes / len(frame)


# ------------------------------------------------------------------------------ frame checks
# Each returns a boolean per row (or one bool) for pandera, and has an explainer below that turns
# a failure into words with a few examples.


def _class_name_matches(class_names: Sequence[str]) -> Callable[[pd.DataFrame], pd.Series]:
    lookup = dict(enumerate(class_names))
    return lambda df: df["class_name"] == df["label"].map(lookup)


def _missing_class_splits(df: pd.DataFrame, class_names: Sequence[str]) -> list[str]:
    present = set(zip(df["split"], df["label"], strict=True))
    return [
        f"class '{name}' (label {k}) has no images in {split}"
        for k, name in enumerate(class_names)
        for split in SPLITS
        if (split, k) not in present
    ]


def _fraction_problems(df: pd.DataFrame, fractions: dict[str, float], n_classes: int) -> list[str]:
    tol = split_tolerance(df, n_classes)
    total = max(len(df), 1)
    out = []
    for split in SPLITS:
        actual = float((df["split"] == split).sum()) / total
        if abs(actual - fractions[split]) > tol:
            out.append(
                f"{split} holds {actual:.3f} of the images but data.split.{split} is "
                f"{fractions[split]} (tolerance {tol:.3f})"
            )
    return out


def _leaking_rows(df: pd.DataFrame) -> pd.Series:
    """True for rows whose image (sha256) is not also in another split."""
    splits_per_hash = df.groupby("sha256")["split"].transform("nunique")
    return splits_per_hash <= 1


def _leak_examples(df: pd.DataFrame) -> list[str]:
    leaking = df[~_leaking_rows(df)]
    out = []
    for digest, rows in leaking.groupby("sha256", sort=False):
        pairs = [
            f"{src} ({split})" for src, split in zip(rows["source"], rows["split"], strict=True)
        ]
        out.append(f"same image {digest[:12]}… in {' and '.join(pairs[:3])}")
        if len(out) == _MAX_EXAMPLES:
            break
    n_hashes = leaking["sha256"].nunique()
    if n_hashes > len(out):
        out.append(f"... {n_hashes} leaking images in all")
    return out


def manifest_schema(class_names: Sequence[str], fractions: dict[str, float]) -> pa.DataFrameSchema:
    """The schema for a manifest of ``class_names`` split by ``fractions`` (train/val/test)."""
    k = len(class_names)
    return pa.DataFrameSchema(
        {
            "index": pa.Column(np.int64, pa.Check.ge(0), unique=True),
            "split": pa.Column(str, pa.Check.isin(list(SPLITS))),
            "label": pa.Column(np.int64, pa.Check.in_range(0, k - 1)),
            "class_name": pa.Column(str, pa.Check.isin(list(class_names))),
            "source": pa.Column(str, pa.Check.str_length(min_value=1)),
            "sha256": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{64}$")),
        },
        checks=[
            pa.Check(_class_name_matches(class_names), name="class_name_matches_label"),
            pa.Check(
                lambda df: not _missing_class_splits(df, class_names),
                name="every_class_in_every_split",
            ),
            pa.Check(
                lambda df: not _fraction_problems(df, fractions, k),
                name="split_fractions",
            ),
            pa.Check(_leaking_rows, name="no_image_in_two_splits"),
        ],
        strict=True,
        ordered=True,
        coerce=False,
    )


def _explain(
    check: str, cases: pd.DataFrame, df: pd.DataFrame, names: Sequence[str], fr: dict[str, float]
) -> list[str]:
    if check == "every_class_in_every_split":
        return _missing_class_splits(df, names)
    if check == "split_fractions":
        return _fraction_problems(df, fr, len(names))
    if check == "no_image_in_two_splits":
        return _leak_examples(df)
    if check == "class_name_matches_label":
        bad = df[~_class_name_matches(names)(df)].head(_MAX_EXAMPLES)
        return [
            f"row index={i}: label {lab} is class '{names[lab] if 0 <= lab < len(names) else '?'}'"
            f" but class_name is '{cn}'"
            for i, lab, cn in zip(bad["index"], bad["label"], bad["class_name"], strict=True)
        ]
    values = cases["failure_case"].astype(str).unique().tolist()
    shown = ", ".join(values[:_MAX_EXAMPLES]) + (" ..." if len(values) > _MAX_EXAMPLES else "")
    return [f"{len(cases)} failing value(s): {shown}"]


def validate_manifest(
    frame: pd.DataFrame, class_names: Sequence[str], fractions: dict[str, float]
) -> None:
    """Raise UserError summarising every failed schema check (nothing is written before this)."""
    try:
        manifest_schema(class_names, fractions).validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases.copy()
        # A frame-level check reports one failure case per column of each failing row; report
        # it once, for the manifest as a whole.
        frame_level = cases["schema_context"] == "DataFrameSchema"
        cases["where"] = cases["column"].map(lambda c: f"manifest column '{c}'")
        cases.loc[frame_level | cases["column"].isna(), "where"] = "manifest"
        lines = []
        for (where, check), group in cases.groupby(["where", "check"], sort=False):
            for detail in _explain(str(check), group, frame, class_names, fractions):
                lines.append(f"  - {where}, check {check}: {detail}")
        raise UserError("data manifest failed validation:\n" + "\n".join(lines)) from None


def warm_up_validation() -> None:
    """Validate a small, valid manifest once, so the real validation later does not pay
    pandera's one-time set-up (its pandas backends, and Hypothesis's plugin scan where Hypothesis
    is installed: ~0.2–0.5 s here).

    Why: prepare runs this in a thread while its worker processes decode (``hjepa.data.stream``),
    when the parent process would otherwise wait; the set-up then no longer adds to prepare's
    wall time. It raises what a real validation of a valid manifest would raise (nothing).
    """
    names, per_class = ["a", "b"], {"train": 7, "val": 1, "test": 2}
    splits = [s for s in SPLITS for _ in range(per_class[s] * len(names))]
    labels = np.array([k % len(names) for k in range(len(splits))], dtype=np.int64)
    indices = np.arange(len(splits))
    frame = build_manifest(
        indices,
        np.array(splits),
        labels,
        names,
        [f"warm-up/{i}" for i in indices],
        [f"{i:064x}" for i in indices],
    )
    total = len(splits)
    validate_manifest(frame, names, {s: per_class[s] * len(names) / total for s in SPLITS})


def check_arrays(
    split: str, images: np.ndarray, labels: np.ndarray, n_rows: int, size: int, channels: int
) -> None:
    """The arrays of one split must match the manifest and ``data.image_size``/``channels``."""
    want = (n_rows, size, size, channels)
    problems = []
    if images.dtype != np.uint8:
        problems.append(f"{split} images have dtype {images.dtype}, expected uint8")
    if images.shape != want:
        problems.append(f"{split} images have shape {images.shape}, expected {want} (N×H×W×C)")
    if labels.dtype != np.int64:
        problems.append(f"{split} labels have dtype {labels.dtype}, expected int64")
    if labels.shape != (n_rows,):
        problems.append(f"{split} labels have shape {labels.shape}, expected ({n_rows},)")
    if problems:
        raise UserError("prepared arrays are inconsistent: " + "; ".join(problems))
