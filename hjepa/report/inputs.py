"""Everything the report reads, loaded and checked in one place.

Why: the report stage depends on files written by three other stages; a missing or malformed one
should be one clear error naming the file, not a KeyError deep inside a plotting call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hjepa.core.config import parse_params, read_raw_params, to_dict
from hjepa.core.errors import UserError

__all__ = ["ReportInputs", "flatten", "load_inputs", "load_params_dict"]


@dataclass(frozen=True)
class ReportInputs:
    params: dict[str, Any]  # resolved (defaults included), plain dict: reading it records nothing
    data: dict[str, Any]
    pretrain: dict[str, Any]
    log: pd.DataFrame
    probe: dict[str, Any]
    confusion: pd.DataFrame


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys (lists stay values, as DVC treats them)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node} if prefix else {"": node}


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: not found (run the stage that writes it first: `dvc repro`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _table(path: Path, sep: str, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: not found (run the stage that writes it first: `dvc repro`)")
    try:
        frame = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable table ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    return frame


def load_params_dict(path: Path) -> dict[str, Any]:
    """The validated, resolved params as a plain dict (validation without recording reads)."""
    return to_dict(parse_params(read_raw_params(path), str(path)))


def load_inputs(root: Path, params: dict[str, Any] | None = None) -> ReportInputs:
    """Load the report's inputs from a project directory ``root`` (``params``: resolved dict;
    default: ``root/params.yaml`` validated and resolved)."""
    metrics = root / "metrics"
    return ReportInputs(
        params=params if params is not None else load_params_dict(root / "params.yaml"),
        data=_json(metrics / "data.json"),
        pretrain=_json(metrics / "pretrain.json"),
        log=_table(metrics / "pretrain_log.tsv", "\t", ("step", "loss")),
        probe=_json(metrics / "probe.json"),
        confusion=_table(metrics / "confusion.csv", ",", ("actual", "predicted")),
    )
