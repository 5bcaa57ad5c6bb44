"""Reading ``dvc.yaml`` as data (no DVC import): stages, their params, deps and outs.

Used by ``hjepa dag check`` and ``hjepa doctor``. Only the parts of the format this project
uses are understood: ``params`` as leaf keys (or ``{file: [keys]}``), ``deps``, ``outs``,
``metrics`` and ``plots`` as paths or ``{path: options}``, and ``${key}`` templating from
params.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hjepa.errors import UserError

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


@dataclass
class Stage:
    name: str
    cmd: str
    params: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"dvc.yaml uses ${{{dotted}}} but params.yaml has no key '{dotted}'")
        node = node[part]
    return node


def _paths(entries: Any, values: dict[str, Any]) -> list[str]:
    out = []
    for entry in entries or []:
        path = next(iter(entry)) if isinstance(entry, dict) else entry
        out.append(_TEMPLATE.sub(lambda m: str(_lookup(values, m.group(1).strip())), str(path)))
    return out


def _params(entries: Any) -> list[str]:
    keys: list[str] = []
    for entry in entries or []:
        if isinstance(entry, dict):
            for _file, sub in entry.items():
                keys.extend(str(k) for k in (sub or []))
        else:
            keys.append(str(entry))
    return keys


def read_stages(root: Path = Path(".")) -> list[Stage]:
    """The stages of ``root/dvc.yaml`` in file order."""
    path = root / "dvc.yaml"
    if not path.is_file():
        raise UserError(f"{path}: not found (run from the project root)")
    doc = yaml.safe_load(path.read_text()) or {}
    values_file = root / "params.yaml"
    values = yaml.safe_load(values_file.read_text()) if values_file.is_file() else {}
    stages = []
    for name, spec in (doc.get("stages") or {}).items():
        outs = _paths(spec.get("outs"), values)
        outs += _paths(spec.get("metrics"), values) + _paths(spec.get("plots"), values)
        stages.append(
            Stage(
                name=name,
                cmd=str(spec.get("cmd", "")),
                params=_params(spec.get("params")),
                deps=_paths(spec.get("deps"), values),
                outs=outs,
            )
        )
    return stages
