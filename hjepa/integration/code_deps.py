"""Which project files a stage's code loads, and whether its ``dvc.yaml`` deps cover them.

DVC does not follow Python imports: a stage reruns when a listed dep changes, so a module the
stage imports but does not list could change without a rerun, and DVC would serve a stale
result. This module finds the files two ways and takes their union:

- dynamically: import the stage's entry module (``python -m X`` in its ``cmd``) in a clean
  interpreter and list every loaded module file under the project root;
- statically: follow every ``import`` statement of those files, including the ones inside
  functions (imported lazily, so not loaded by the first way), through the project's own
  modules.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

_ENTRY = re.compile(r"(?:^|\s)-m\s+([\w.]+)")

_LIST_LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values())
                         if getattr(m, '__file__', None)})))
"""


def entry_module(cmd: str) -> str | None:
    """The module a stage command runs with ``-m`` (``python -m pipeline.probe``), or None."""
    found = _ENTRY.search(cmd)
    return found.group(1) if found else None


def loaded_files(root: Path, module: str) -> set[str]:
    """Project files (relative paths) loaded by importing ``module`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", _LIST_LOADED, module],
        cwd=root,
        capture_output=True,
        text=True,
        env=_clean_env(root),
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"importing {module} failed: {tail[0]}")
    return {rel for f in json.loads(proc.stdout) if (rel := _project_relative(root, f))}


def _clean_env(root: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)  # the project's own files, never an installed copy
    return env


def _project_relative(root: Path, file: str) -> str | None:
    path = Path(file)
    if not path.is_absolute() or not path.is_file():
        return None  # frozen or generated modules (some report a bare name as __file__)
    path = path.resolve()
    if not path.is_relative_to(root) or ".venv" in path.relative_to(root).parts:
        return None
    return path.relative_to(root).as_posix()


def imported_files(root: Path, start: set[str]) -> set[str]:
    """``start`` plus every project module reachable through ``import`` statements anywhere in
    the files (module level or inside functions)."""
    seen: set[str] = set()
    todo = sorted(start)
    while todo:
        rel = todo.pop()
        if rel in seen or not rel.endswith(".py"):
            continue
        seen.add(rel)
        tree = ast.parse((root / rel).read_text(), filename=rel)
        for name in _imported_names(tree, rel):
            todo.extend(_module_files(root, name))
    return seen


def _imported_names(tree: ast.AST, rel: str) -> list[str]:
    package = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    if not rel.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    names: list[str] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names.extend(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return names


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never executed at run time)."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_files(root: Path, dotted: str) -> list[str]:
    """The project files that importing ``dotted`` executes: each package ``__init__`` on the
    way and the module itself; nothing for modules outside the project."""
    parts = dotted.split(".")
    files: list[str] = []
    for i in range(1, len(parts) + 1):
        base = Path(*parts[:i])
        if (root / base / "__init__.py").is_file():
            files.append((base / "__init__.py").as_posix())
        elif (root / base.with_suffix(".py")).is_file():
            files.append(base.with_suffix(".py").as_posix())
            break
        else:
            break
    return files


def uncovered(files: set[str], deps: tuple[str, ...]) -> list[str]:
    """The files that no dep (a file or a folder) covers."""
    roots = [d.rstrip("/") for d in deps]
    return sorted(f for f in files if not any(f == d or f.startswith(d + "/") for d in roots))
