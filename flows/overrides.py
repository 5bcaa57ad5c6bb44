"""Experiment override sets: checked against the params schema, then written as ``dvc exp -S``.

Why validate here: a misspelled key would otherwise surface minutes later inside a queued DVC
worker (or, for keys DVC accepts, as a parameter that is silently ignored). Every set is checked
with the same schema the stages use, before any experiment starts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hjepa.core.config import ConfigError, apply_overrides, parse_params, read_raw_params

OverrideSet = Mapping[str, Any]


def load_raw_params(project_dir: str | Path) -> dict[str, Any]:
    """The project's ``params.yaml`` as plain data (not yet validated)."""
    raw = read_raw_params(Path(project_dir) / "params.yaml")
    return raw if isinstance(raw, dict) else {}


def validate_override_sets(raw: Mapping[str, Any], sets: Sequence[OverrideSet]) -> None:
    """Raise one ``ConfigError`` naming every invalid set and key; return if all are valid."""
    if not sets:
        raise ConfigError(
            "overrides: empty list; give at least one override set, "
            'e.g. [{"model.layerscale.use_layerscale": true}] (or [{}] for the params as they are)'
        )
    problems = []
    for i, overrides in enumerate(sets):
        label = f"override set {i} {json.dumps(dict(overrides), default=str)}"
        try:
            bad_keys = [k for k in overrides if not isinstance(k, str) or not k]
            if bad_keys:
                raise ConfigError(f"keys must be non-empty dotted strings, got {bad_keys}")
            parse_params(apply_overrides(raw, overrides), label)
        except ConfigError as exc:
            text = str(exc)
            problems.append(text if text.startswith(label) else f"{label}: {text}")
    if problems:
        raise ConfigError("\n".join(problems))


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar ``dvc exp run -S`` (Hydra) parses back to the same value.

    Strings are always quoted, so ``'1'`` stays a string and ``'null'`` is not None.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise ConfigError(f"override value {value!r}: unsupported type {type(value).__name__}")


def set_param_args(raw: Mapping[str, Any], overrides: OverrideSet) -> list[str]:
    """``["-S", "key=value", ...]`` for ``dvc exp run``.

    A key that ``params.yaml`` does not spell out (the schema default applies) is written
    ``+key=value``: Hydra refuses to set a key that is not in the file otherwise.
    """
    args: list[str] = []
    for key, value in overrides.items():
        prefix = "" if _present(raw, key) else "+"
        args += ["-S", f"{prefix}{key}={hydra_value(value)}"]
    return args


def _present(raw: Mapping[str, Any], dotted: str) -> bool:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def checked_set_args(root: Path, overrides: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Every override set checked against the schema, as ``dvc exp run -S`` arguments; a
    ``UserError`` naming the key when one is wrong."""
    raw = load_raw_params(root)
    validate_override_sets(raw, list(overrides))
    return [set_param_args(raw, o) for o in overrides]
