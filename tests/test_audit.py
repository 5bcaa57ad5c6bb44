"""``hjepa audit``: passes on the real params, and catches a key that nothing reads."""

from __future__ import annotations

from typing import Literal

import pytest
from conftest import ROOT, tiny_params
from pydantic import Field

from hjepa.cli import main
from hjepa.core.config import EmaParams, ModelParams, Params, leaf_keys, load_params
from hjepa.tools.audit import audit_params, audited_keys, candidates
from hjepa.tools.audit_cmd import report


class _ModelWithDeadKey(ModelParams):
    unused_flag: bool = False  # accepted, validated, read by nothing: the bug the audit exists for


class _EmaWithDeadKey(EmaParams):
    unused_rate: float = Field(0.5, gt=0, lt=1)


class _ParamsWithDeadKeys(Params):
    model: _ModelWithDeadKey = Field(default_factory=_ModelWithDeadKey)
    ema: _EmaWithDeadKey = Field(default_factory=_EmaWithDeadKey)


@pytest.mark.slow
def test_audit_passes_on_the_default_params(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", str(ROOT / "params.yaml")])
    out = capsys.readouterr().out
    assert code == 0, out
    params = load_params(ROOT / "params.yaml")
    keys = audited_keys(params)
    expected = [
        k
        for k in leaf_keys(params)
        if k.split(".")[0] in ("model", "mask", "ema") or k in ("data.image_size", "data.channels")
    ]
    assert keys == expected and "model.layerscale.use_layerscale" in keys
    for key in keys:
        line = next(x for x in out.splitlines() if x.startswith(key + " "))
        assert "NONE" not in line
    assert "model.layerscale.use_layerscale" in out and "parameters" in out


@pytest.mark.slow
def test_audit_fails_on_keys_nothing_reads(capsys: pytest.CaptureFixture[str]) -> None:
    params = _ParamsWithDeadKeys.model_validate(tiny_params())
    params._bind("")
    assert {"model.unused_flag", "ema.unused_rate"} <= set(audited_keys(params))
    rows = {r.key: r for r in audit_params(params, schema=_ParamsWithDeadKeys)}
    assert not rows["model.unused_flag"].ok
    assert not rows["ema.unused_rate"].ok
    assert rows["model.layerscale.use_layerscale"].ok  # real keys still pass beside them
    assert rows["ema.momentum_start"].ok
    assert report(list(rows.values())) == 1
    err = capsys.readouterr().err
    assert "model.unused_flag" in err and "ema.unused_rate" in err


def test_candidates_are_other_valid_looking_values() -> None:
    assert candidates(True, bool) == [False]
    assert candidates("pad", Literal["pad", "trim"]) == ["trim"]
    assert candidates(1, Literal[1, 3]) == [3]
    assert candidates(4, int)[0] == 8
    assert 0.0 not in candidates(0.0, float) and candidates(0.0, float)
    # a momentum_end of 0.99 with momentum_start 0.99 only has (0.99, 1] left to try
    assert any(0.99 < c <= 1.0 for c in candidates(0.99, float))
    levels = [{"depth": 2, "scale": 2, "weight": 0.5}, {"depth": 4, "scale": 1, "weight": 1.0}]
    assert levels[:-1] in candidates(levels, list)
    pair = candidates([0.15, 0.2], tuple)
    assert pair and all(len(c) == 2 and c != [0.15, 0.2] for c in pair)
