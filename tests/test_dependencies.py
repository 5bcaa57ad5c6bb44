"""Every third-party package the project's code imports is a declared, exactly pinned dependency,
and the runtime lock file does not carry the development tools.

Why: a package that is only present because another one pulls it in (networkx through DVC,
threadpoolctl through scikit-learn) disappears the day that one drops it, and a fresh machine
then fails at import time.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from conftest import ROOT

CODE = ["hjepa", "pipeline", "flows"]
OURS = {"hjepa", "pipeline", "flows", "conftest"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in OURS and n not in sys.stdlib_module_names}


def _declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for spec in project["dependencies"]:
        name, _, version = spec.partition("==")
        assert version, f"pyproject.toml: {spec} is not pinned exactly (name==version)"
        pins[_norm(name)] = version
    return pins


def test_every_imported_package_is_a_declared_dependency() -> None:
    declared = _declared()
    owners = packages_distributions()
    missing = []
    for module in sorted(_imported_top_levels()):
        dists = {_norm(d) for d in owners.get(module, [])}
        if not dists & declared.keys():
            missing.append(f"{module} (from {', '.join(sorted(dists)) or 'no installed package'})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_the_runtime_lock_pins_every_declared_dependency_and_no_dev_tool() -> None:
    lock = {
        _norm(line.split("==")[0]): line.split("==")[1]
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for name, version in _declared().items():
        assert lock.get(name) == version, f"requirements.lock: {name} should be =={version}"
    for tool in ("pytest", "ruff", "mypy", "hypothesis"):
        assert tool not in lock, f"{tool} is a development tool: requirements-dev.lock only"
    dev = (ROOT / "requirements-dev.lock").read_text()
    assert "-r requirements.lock" in dev


def test_dvc_parses_yaml_with_the_c_parser() -> None:
    """DVC reads dvc.yaml, dvc.lock and params.yaml with ruamel.yaml's safe loader; without the
    pinned ruamel.yaml.clib that loader is pure Python and a no-op `dvc repro` takes ~0.2 s
    longer (README "Benchmarks")."""
    from ruamel.yaml import YAML

    parser = YAML(typ="safe").Parser
    assert "clib" in parser.__module__, f"ruamel.yaml parses with {parser.__module__}.{parser}"
