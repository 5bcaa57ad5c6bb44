"""``hjepa dag check``: what DVC tracks for each stage must be what the stage really uses.

- Params: a stage's declared ``params:`` must equal the params it really read. A key read but
  not declared is a stale-cache bug (DVC would not rerun the stage when it changes); a key
  declared but never read causes spurious reruns. The record of what a stage read is
  ``params_read/<stage>.json``, written by every stage run (pipeline/_stage.py), so run
  ``dvc repro`` first.
- Code: every project file a stage's entry point imports (``hjepa.integration.code_deps``) must
  be covered by the stage's ``deps`` (a file or a folder), or an edit to it would not rerun the
  stage. This half needs no run; ``--code-only`` checks just it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hjepa.core.errors import UserError
from hjepa.integration.code_deps import entry_module, imported_files, loaded_files, uncovered
from hjepa.integration.dvc_repo import Stage, pipeline_stages


def _covered(key: str, declared: set[str]) -> bool:
    """A read key is covered by itself or by a declared ancestor section."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in declared for i in range(1, len(parts) + 1))


def compare(declared: set[str], read: set[str]) -> tuple[list[str], list[str]]:
    """(read but undeclared, declared but unread)."""
    undeclared = sorted(k for k in read if not _covered(k, declared))
    unread = sorted(d for d in declared if not any(r == d or r.startswith(d + ".") for r in read))
    return undeclared, unread


def check_code(root: Path, stages: list[Stage]) -> list[str]:
    """One problem per project file a stage imports that its deps do not cover."""
    root = root.resolve()
    problems: list[str] = []
    for stage in stages:
        module = entry_module(stage.cmd)
        if module is None:
            continue  # not a `python -m` stage: nothing of ours to follow
        try:
            files = imported_files(root, loaded_files(root, module))
        except RuntimeError as exc:
            problems.append(f"stage '{stage.name}': {exc}")
            continue
        for path in uncovered(files, stage.deps):
            problems.append(
                f"stage '{stage.name}' imports {path} but dvc.yaml does not list it (or a "
                "folder above it) under deps: an edit to it would not rerun the stage; add it"
            )
    return problems


def check(root: Path, stages: list[Stage] | None = None) -> list[str]:
    problems: list[str] = []
    for stage in stages if stages is not None else pipeline_stages(root):
        record = root / "params_read" / f"{stage.name}.json"
        if not record.is_file():
            problems.append(
                f"stage '{stage.name}': no record of the params it read ({record}); run "
                "`dvc repro` first"
            )
            continue
        read = set(json.loads(record.read_text())["params"])
        undeclared, unread = compare(set(stage.params), read)
        for key in undeclared:
            problems.append(
                f"stage '{stage.name}' reads '{key}' but dvc.yaml does not list it under "
                "params: DVC would serve a stale result when it changes; add it"
            )
        for key in unread:
            problems.append(
                f"stage '{stage.name}' lists '{key}' under params but never reads it: every "
                "change to it reruns the stage for nothing; remove it"
            )
    return problems


def _run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    stages = pipeline_stages(root)
    problems = check_code(root, stages)
    if not args.code_only:
        problems += check(root, stages)
    if problems:
        raise UserError(
            "dvc.yaml does not match what the stages use:\n  - " + "\n  - ".join(problems)
        )
    names = ", ".join(s.name for s in stages)
    what = "imports are" if args.code_only else "params and imports are"
    print(f"dag check OK: every stage's {what} covered by dvc.yaml ({names})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dag", help="check dvc.yaml against what the stages really read")
    inner = parser.add_subparsers(dest="dag_command", required=True)
    chk = inner.add_parser(
        "check", help="compare each stage's params: and deps: with what it read and imports"
    )
    chk.add_argument("--root", default=".", help="project root (default: .)")
    chk.add_argument(
        "--code-only",
        action="store_true",
        help="check only that each stage's deps cover its imports (needs no `dvc repro`)",
    )
    chk.set_defaults(func=_run)
