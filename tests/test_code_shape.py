"""The layout rules that keep the code readable: no module over 450 lines, no function or
class body over 150, and no stage folder that imports another stage's folder or the
DVC/Prefect integration layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

CODE = sorted(p for folder in ("hjepa", "pipeline", "flows") for p in (ROOT / folder).rglob("*.py"))
STAGES = ("data", "train", "eval", "report")


@pytest.mark.parametrize("path", CODE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= 450, f"{path.name}: {text.count(chr(10))} lines (at most 450)"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 150, f"{path.name}: {node.name} is {length} lines (at most 150)"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_folder_imports_no_other_stage_and_no_integration(stage: str) -> None:
    forbidden = [f"hjepa.{s}" for s in STAGES if s != stage]
    forbidden += ["hjepa.integration", "hjepa.tools", "dvc", "prefect", "flows"]
    for path in (ROOT / "hjepa" / stage).rglob("*.py"):
        bad = [m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden)]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
