"""The resume hash covers every key of the sections that shape training, except an explicit list.

A checkpoint is resumed only under an equal hash, so a shaping key missing from the hash would
resume a run under other values (a silent wrong result), and a non-shaping key in it would throw
away a good checkpoint. Both directions are checked for every leaf key the schema has.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import tiny_params
from pydantic import ValidationError

from hjepa.core.config import Params, apply_overrides, leaf_keys, parse_params
from hjepa.tools.audit import _annotation, _get, candidates
from hjepa.train.resume import NOT_SHAPING, SHAPING_SECTIONS, training_hash

BASE = tiny_params()
BASE_PARAMS = parse_params(BASE)
SHAPING_KEYS = [k for k in leaf_keys(BASE_PARAMS) if k.split(".")[0] in SHAPING_SECTIONS]


def _changed(key: str) -> Params:
    """The base params with ``key`` set to its first valid alternative value."""
    for alt in candidates(_get(BASE, key), _annotation(Params, key)):
        try:
            return parse_params(apply_overrides(BASE, {key: alt}))
        except (ValidationError, ValueError):
            continue
    raise AssertionError(f"no valid alternative value for {key}")


def test_the_not_shaping_list_names_real_keys() -> None:
    assert set(SHAPING_KEYS) >= NOT_SHAPING


@pytest.mark.parametrize("key", SHAPING_KEYS)
def test_each_key_changes_the_hash_unless_listed_as_not_shaping(key: str) -> None:
    base: Any = training_hash(BASE_PARAMS, "data")
    changed = training_hash(_changed(key), "data")
    if key in NOT_SHAPING:
        assert changed == base, f"{key} is listed as not shaping but changes the hash"
    else:
        assert changed != base, f"{key} shapes training but the resume hash ignores it"


def test_probe_params_and_data_change_what_they_should() -> None:
    other_probe = parse_params(apply_overrides(BASE, {"probe.knn_k": 3}))
    assert training_hash(other_probe, "data") == training_hash(BASE_PARAMS, "data")
    assert training_hash(BASE_PARAMS, "other") != training_hash(BASE_PARAMS, "data")
