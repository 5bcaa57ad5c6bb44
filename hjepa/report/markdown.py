"""Markdown building blocks for the report: tables that read well on GitHub and in a pager."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["fmt", "image", "pct", "table"]


def fmt(value: Any) -> str:
    """A cell: floats with 4 significant digits, lists inline, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; string cells are used as given, others through ``fmt``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [c if isinstance(c, str) else fmt(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def image(alt: str, rel_path: str) -> str:
    return f"![{alt}]({rel_path})"
