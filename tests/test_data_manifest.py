"""Split (deterministic, stratified, duplicates kept together) and the pandera manifest schema
catching each bad case."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hjepa.core.errors import UserError
from hjepa.data import manifest
from hjepa.data.manifest import build_manifest, check_arrays, validate_manifest
from hjepa.data.split import SPLITS, duplicate_groups, stratified_split

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
NAMES = ["cat", "dog"]


def fake_hash(i: int) -> str:
    return f"{i:064x}"


def good_manifest(per_class: int = 30, seed: int = 0):
    labels = np.repeat(np.arange(len(NAMES)), per_class)
    hashes = [fake_hash(i) for i in range(len(labels))]
    splits = stratified_split(labels, duplicate_groups(hashes), FRACTIONS, seed, NAMES)
    sources = [f"img{i}.png" for i in range(len(labels))]
    return build_manifest(np.arange(len(labels)), splits, labels, NAMES, sources, hashes)


# ------------------------------------------------------------------------------------- split
def test_split_stratified_and_deterministic():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    groups = np.arange(len(labels))
    a = stratified_split(labels, groups, FRACTIONS, 7, ["a", "b", "c"])
    assert np.array_equal(a, stratified_split(labels, groups, FRACTIONS, 7, ["a", "b", "c"]))
    assert not np.array_equal(a, stratified_split(labels, groups, FRACTIONS, 8, ["a", "b", "c"]))
    for k, n in enumerate([50, 30, 20]):
        counts = {s: int(((labels == k) & (a == s)).sum()) for s in SPLITS}
        assert counts == {"train": round(n * 0.7), "val": round(n * 0.1), "test": round(n * 0.2)}


def test_duplicates_stay_in_one_split():
    # 40 images of one class where images come in identical pairs, plus a second class.
    hashes = [f"h{i // 2}" for i in range(40)] + [f"u{i}" for i in range(10)]
    labels = np.array([0] * 40 + [1] * 10)
    groups = duplicate_groups(hashes)
    assert groups.max() + 1 == 30
    for seed in range(20):
        splits = stratified_split(labels, groups, FRACTIONS, seed, ["x", "y"])
        for i in range(0, 40, 2):
            assert splits[i] == splits[i + 1]


@pytest.mark.parametrize("n", [1, 2])
def test_class_with_too_few_images_named(n):
    labels = np.array([0] * 10 + [1] * n)
    with pytest.raises(UserError, match=rf"data/raw/y: has {n} image\(s\)"):
        stratified_split(labels, np.arange(len(labels)), FRACTIONS, 0, ["data/raw/x", "data/raw/y"])


def test_class_with_too_few_distinct_images_named():
    labels = np.array([0] * 10 + [1] * 4)
    groups = duplicate_groups([f"a{i}" for i in range(10)] + ["b", "b", "b", "c"])
    with pytest.raises(UserError, match="y: has 4 images but only 2 distinct"):
        stratified_split(labels, groups, FRACTIONS, 0, ["x", "y"])


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(3, 40), min_size=1, max_size=5),
    val=st.floats(0.05, 0.45),
    test=st.floats(0.05, 0.45),
    seed=st.integers(0, 2**32 - 1),
    dup_every=st.integers(0, 5),
)
def test_split_always_passes_schema(sizes, val, test, seed, dup_every):
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    labels = np.repeat(np.arange(len(sizes)), sizes)
    # Some identical pairs inside a class (every dup_every-th image copies the one before it).
    hashes, prev = [], None
    for i, lab in enumerate(labels):
        same_class = i > 0 and labels[i - 1] == lab
        dup = dup_every and same_class and i % dup_every == 0 and prev is not None
        hashes.append(prev if dup else fake_hash(i))
        prev = hashes[-1]
    groups = duplicate_groups(hashes)
    names = [f"c{k}" for k in range(len(sizes))]
    try:
        splits = stratified_split(labels, groups, fractions, seed, names)
    except UserError as exc:
        assert "distinct" in str(exc)  # only when duplicates leave < 3 distinct images
        return
    frame = build_manifest(np.arange(len(labels)), splits, labels, names, hashes, hashes)
    validate_manifest(frame, names, fractions)


# -------------------------------------------------------------------------------- the schema
def test_good_manifest_passes():
    frame = good_manifest()
    assert list(frame.columns) == ["index", "split", "label", "class_name", "source", "sha256"]
    assert frame["split"].tolist() == sorted(frame["split"], key=SPLITS.index)
    validate_manifest(frame, NAMES, FRACTIONS)


def test_unknown_label_caught():
    frame = good_manifest()
    frame.loc[3, "label"] = 5
    with pytest.raises(UserError, match="column 'label', check in_range.*5"):
        validate_manifest(frame, NAMES, FRACTIONS)


def test_class_name_inconsistent_with_label_caught():
    frame = good_manifest()
    frame.loc[0, "class_name"] = "dog"  # row 0 has label 0 = cat
    with pytest.raises(UserError, match="label 0 is class 'cat' but class_name is 'dog'"):
        validate_manifest(frame, NAMES, FRACTIONS)


def test_missing_class_in_split_caught():
    frame = good_manifest()
    frame = frame[~((frame["split"] == "val") & (frame["label"] == 1))].reset_index(drop=True)
    with pytest.raises(UserError, match=r"class 'dog' \(label 1\) has no images in val"):
        validate_manifest(frame, NAMES, FRACTIONS)


def test_unknown_split_caught():
    frame = good_manifest()
    frame.loc[0, "split"] = "holdout"
    with pytest.raises(UserError, match="column 'split'.*holdout"):
        validate_manifest(frame, NAMES, FRACTIONS)


def test_split_fractions_caught():
    frame = good_manifest(per_class=100)
    with pytest.raises(UserError, match="data.split.train is 0.3"):
        validate_manifest(frame, NAMES, {"train": 0.3, "val": 0.5, "test": 0.2})


def test_duplicate_index_and_bad_hash_caught():
    frame = good_manifest()
    frame.loc[1, "index"] = frame.loc[0, "index"]
    frame.loc[2, "sha256"] = "XYZ"
    with pytest.raises(UserError) as info:
        validate_manifest(frame, NAMES, FRACTIONS)
    assert "column 'index'" in str(info.value) and "column 'sha256'" in str(info.value)
    assert "XYZ" in str(info.value)


def test_leakage_caught_with_example_sources():
    frame = good_manifest()
    train_row = frame.index[frame["split"] == "train"][0]
    test_row = frame.index[frame["split"] == "test"][0]
    frame.loc[test_row, "sha256"] = frame.loc[train_row, "sha256"]
    with pytest.raises(UserError) as info:
        validate_manifest(frame, NAMES, FRACTIONS)
    msg = str(info.value)
    assert "no_image_in_two_splits" in msg
    src_train, src_test = frame.loc[train_row, "source"], frame.loc[test_row, "source"]
    assert f"{src_train} (train) and {src_test} (test)" in msg


def test_duplicates_within_one_split_are_not_leakage():
    frame = good_manifest()
    rows = frame.index[frame["split"] == "train"][:2]
    frame.loc[rows[1], "sha256"] = frame.loc[rows[0], "sha256"]
    validate_manifest(frame, NAMES, FRACTIONS)


def test_extra_column_caught():
    frame = good_manifest()
    frame["extra"] = 1
    with pytest.raises(UserError, match="extra"):
        validate_manifest(frame, NAMES, FRACTIONS)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.int64), "dtype float32"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int64), r"shape \(4, 8, 8, 3\)"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(4, np.int64), r"expected \(4, 8, 8, 1\)"),
        (np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int32), "labels have dtype int32"),
        (np.zeros((4, 8, 8, 1), np.uint8), np.zeros(3, np.int64), r"labels have shape \(3,\)"),
    ],
)
def test_check_arrays(images, labels, match):
    check_arrays("train", np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int64), 4, 8, 1)
    with pytest.raises(UserError, match=match):
        check_arrays("train", images, labels, 4, 8, 1)


def test_warm_up_validates_a_valid_manifest_through_the_real_schema(monkeypatch):
    """The warm-up prepare runs while its workers decode must go through the real validation
    (or it warms nothing) and must pass (or its thread would stop at the first failed check)."""
    calls = []

    def spy(frame, class_names, fractions):
        calls.append((frame, class_names, fractions))
        validate_manifest(frame, class_names, fractions)  # raises if the frame is not valid

    monkeypatch.setattr(manifest, "validate_manifest", spy)
    manifest.warm_up_validation()
    assert len(calls) == 1
    frame, names, fractions = calls[0]
    assert set(frame["split"]) == set(SPLITS) and len(names) == 2
    assert sum(fractions.values()) == pytest.approx(1.0)
