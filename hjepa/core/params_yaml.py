"""Reading a params file strictly: UTF-8, one value per key, no anchors or aliases.

Why not plain ``yaml.safe_load``: it keeps the *last* of two equal keys (a second ``train:`` block
silently resets every train key the first one set, while DVC refuses the same file), it expands
aliases (a self-referencing anchor is a recursive structure that crashes later; nested aliases
are the "billion laughs" blow-up), and undecodable bytes surface as a traceback. Each of these is
reported here as one short paragraph naming the file and line. Values that are not finite
numbers (``.inf``, ``.nan``) are refused by the schema (hjepa.core.config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hjepa.core.errors import UserError


class ParamsFileError(UserError, ValueError):
    """A params file that cannot be read as plain YAML (see module docstring)."""


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and repeated keys in a mapping."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            raise ParamsFileError(
                f"{self.source}: {_line(event.start_mark)}: YAML anchors and aliases "
                f"('&{anchor}' / '*{anchor}') are not allowed in a params file; write the "
                "values out, so every key shows the value DVC tracks"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ParamsFileError(
                    f"{self.source}: {_line(key_node.start_mark)}: key '{key}' appears a second "
                    f"time in the same section (first at {_line(seen[key])}); YAML would keep "
                    "only the last one and silently drop the other's values. Merge them into one"
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping
)


def read_params_yaml(path: str | Path) -> Any:
    """The content of the params file ``path``, parsed strictly (ParamsFileError if refused)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"{path}: params file not found (run from the project root?)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ParamsFileError(
            f"{path}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file "
            "as UTF-8"
        ) from None
    try:
        loader = _StrictLoader(text, str(path))
        loader.name = str(path)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        where = _line(exc.problem_mark or exc.context_mark)
        what = "; ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ParamsFileError(f"{path}: {where}: not valid YAML: {what}") from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise ParamsFileError(
            f"{path}: line {line}: character #x{exc.character:04x} is not allowed in YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise ParamsFileError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ParamsFileError(
            f"{path}: nested too deeply to be a params file (sections are a few levels deep)"
        ) from None
