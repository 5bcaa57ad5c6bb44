"""The docs cannot drift from the code: every params override they show is valid under the
schema, and every project file they name exists.

A README example that fails (a renamed key, a file that moved) is the first thing a new user
runs into; these checks make such a change fail the test suite instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from hydra.core.override_parser.overrides_parser import OverridesParser

from hjepa.core.config import apply_overrides, parse_params

DOCS = [ROOT / "README.md", *sorted((ROOT / "benchmarks").glob("*.md"))]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.sh"))

# `-S key=value` (dvc exp run) and `--set key=value` (bench_quality.py), value optionally quoted.
OVERRIDE = re.compile(r"(-S|--set)\s+'?([A-Za-z_][\w.]*)=([^\s'`)]+)'?")
PLACEHOLDER = re.compile(r"[<>]|\b(?:W|lo|hi|N|DIR|VALUE)\b")
# Project paths in backticks or markdown links: a name with a slash and a known suffix or folder.
PATH = re.compile(
    r"(?:`|\]\()((?:hjepa|pipeline|flows|benchmarks|tests|docs|metrics|reports)/[\w./-]*)"
)


def _commands() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each documented command (a line, with its backslash continuations) and its overrides,
    which apply together (``-S model.width=768 -S model.heads=12`` only makes sense as a set)."""
    found = []
    for path in DOCS + SCRIPTS:
        text = path.read_text().replace("\\\n", " ")
        for number, line in enumerate(text.splitlines(), 1):
            sets = [(f, k, v) for f, k, v in OVERRIDE.findall(line) if k not in ("key", "KEY")]
            if sets:  # `-S key=value` alone is the syntax, not an example
                found.append((f"{path.relative_to(ROOT).as_posix()}:{number}", sets))
    return found


COMMANDS = _commands()


def test_the_docs_show_overrides_at_all() -> None:
    assert sum(len(sets) for _, sets in COMMANDS) > 20  # the pattern still matches the docs


@pytest.mark.parametrize(("where", "sets"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_override_is_accepted_by_the_schema(
    where: str, sets: list[tuple[str, str, str]]
) -> None:
    """The overrides of one command together: ``-S`` values read by DVC's own override grammar
    (Hydra), ``--set`` ones as YAML; a placeholder value (``W``, ``<value>``) only needs its
    key to exist."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    applied = {}
    for flag, key, value in sets:
        if PLACEHOLDER.search(value):
            applied[key] = _get(base, key)
        elif flag == "-S":
            applied[key] = OverridesParser.create().parse_override(f"{key}={value}").value()
        else:
            applied[key] = yaml.safe_load(value)
    parse_params(apply_overrides(base, applied), where)


def _get(raw: dict, key: str) -> object:
    node: object = raw
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"unknown key {key}"
        node = node[part]
    return node


def _named_paths() -> list[tuple[str, str]]:
    found = []
    for path in DOCS + SCRIPTS + [ROOT / "dvc.yaml", ROOT / "Makefile"]:
        for name in PATH.findall(path.read_text()):
            found.append((path.relative_to(ROOT).as_posix(), name.rstrip(".")))
    return found


GENERATED_MARKDOWN = ("reports/report.md", "reports/compare.md")  # written by runs
MARKDOWN = re.compile(r"\b([\w/.-]+\.md)\b")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_markdown_file_the_docs_cite_is_in_the_repository(doc: Path) -> None:
    ours = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    for name in set(MARKDOWN.findall(doc.read_text())) - set(GENERATED_MARKDOWN):
        here = [ROOT / name, doc.parent / name]
        found = any(p.exists() for p in here) or ("/" not in name and name in ours)
        assert found, f"{doc.name} cites {name}, not in the repository"


GENERATED = ("metrics/", "reports/", "models/", "runs/", "data/prepared")


@pytest.mark.parametrize(("doc", "name"), _named_paths(), ids=lambda x: str(x)[:50])
def test_every_project_file_the_docs_name_exists(doc: str, name: str) -> None:
    if name.startswith(GENERATED):
        return  # outputs of a run, not files of the repository
    matches = list(ROOT.glob(name)) if any(c in name for c in "*?[") else [ROOT / name]
    assert any(m.exists() for m in matches), f"{doc} names {name}, which the repository lacks"


def _example_block() -> str:
    text = (ROOT / "README.md").read_text()
    begin, end = "<!-- example-run:begin -->", "<!-- example-run:end -->"
    assert begin in text and end in text, "README.md lost its example-run markers"
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_the_readme_example_run_shows_the_metrics_of_this_commit() -> None:
    """The example's baseline column must be what `dvc repro` wrote at this commit
    (``metrics/``): regenerate it with ``python benchmarks/example_run.py --write-readme``."""
    import json

    metrics = {
        **json.loads((ROOT / "metrics" / "probe.json").read_text()),
        **json.loads((ROOT / "metrics" / "pretrain.json").read_text()),
    }
    checked = 0
    for row in _example_block().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        for i, cell in enumerate(cells[:-1]):
            if cell in ("linear_top1", "knn_top1", "gain_over_random_init", "loss"):
                shown, actual = float(cells[i + 1]), float(metrics[cell])
                assert abs(shown - actual) <= 1e-4 * max(1.0, abs(actual)), (
                    f"README example shows {cell} = {shown}, metrics/ has {actual}: rerun "
                    "python benchmarks/example_run.py --write-readme"
                )
                checked += 1
    assert checked >= 3
