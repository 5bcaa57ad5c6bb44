"""Pydantic's validation errors as messages a person can act on: the dotted key, the value, the
rule, and for a misspelled key the closest allowed one ("did you mean") and the allowed keys.

Kept apart from the schema (``hjepa.core.config``) so that each reads as one thing: what the
params are, and how a wrong one is explained.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["format_validation_error"]


def _loc_text(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _section_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class that holds the last element of ``loc`` (for key suggestions)."""
    cls: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            cls = args[0]
        else:
            return None
    return cls if isinstance(cls, type) else None


def _describe(err: Mapping[str, Any], schema: type[BaseModel]) -> str:
    loc = tuple(err.get("loc", ()))
    key = _loc_text(loc) or "(top level)"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        section = _section_at(schema, loc)
        allowed = sorted(section.model_fields) if section else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        text = f"{key}: unknown key"
        if hint:
            text += f"; did you mean '{hint[0]}'?"
        if allowed:
            text += f" Allowed keys here: {', '.join(allowed)}."
        return text
    value = err.get("input")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "finite_number":
        return f"{key} = {value}: not a finite number (.inf and .nan are not allowed)"
    if kind == "value_error" and isinstance(value, Mapping):
        return _cross_field(schema, loc, key, msg)
    shown = json.dumps(value, default=str) if not isinstance(value, Mapping) else "{...}"
    return f"{key} = {shown}: {msg}"


def _cross_field(schema: type[BaseModel], loc: tuple[Any, ...], key: str, msg: str) -> str:
    """A section validator's message with its keys spelled out in full.

    The validators name the fields of their own section ("warmup_epochs (2) must be smaller than
    epochs (2)"); a user needs the dotted keys ("train.warmup_epochs (2) ..."), the ones to write
    in params.yaml or ``-S``. A message that names no field is prefixed with its section.
    """
    if not loc:
        return msg
    section = _section_at(schema, (*loc, ""))
    fields = sorted(section.model_fields, key=len, reverse=True) if section else []
    if not fields:
        return f"{key}: {msg}"
    pattern = re.compile(rf"(?<![\w.\[])({'|'.join(map(re.escape, fields))})(?=\s*\(|\[|\.)")
    named = pattern.sub(lambda m: f"{key}.{m.group(1)}", msg)
    return named if named != msg else f"{key}: {msg}"


def format_validation_error(exc: ValidationError, source: str, schema: type[BaseModel]) -> str:
    """One paragraph per problem, each naming the dotted key, the value and what is allowed;
    ``schema`` is the root model the keys are looked up in (for "did you mean")."""
    lines = [f"{source}: {exc.error_count()} invalid parameter(s):"]
    lines += [f"  - {_describe(e, schema)}" for e in exc.errors()]
    return "\n".join(lines)
