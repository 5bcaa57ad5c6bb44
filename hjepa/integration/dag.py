"""``hjepa dag check``: each stage's declared ``params:`` must equal the params it really read.

A key read but not declared is a stale-cache bug (DVC would not rerun the stage when it
changes); a key declared but never read causes spurious reruns. The record of what a stage read
is ``params_read/<stage>.json``, written by every stage run (pipeline/_stage.py), so run
``dvc repro`` first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import pipeline_stages


def _covered(key: str, declared: set[str]) -> bool:
    """A read key is covered by itself or by a declared ancestor section."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in declared for i in range(1, len(parts) + 1))


def compare(declared: set[str], read: set[str]) -> tuple[list[str], list[str]]:
    """(read but undeclared, declared but unread)."""
    undeclared = sorted(k for k in read if not _covered(k, declared))
    unread = sorted(d for d in declared if not any(r == d or r.startswith(d + ".") for r in read))
    return undeclared, unread


def check(root: Path) -> list[str]:
    problems: list[str] = []
    for stage in pipeline_stages(root):
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
    problems = check(root)
    if problems:
        raise UserError(
            "dvc.yaml params do not match what the stages read:\n  - " + "\n  - ".join(problems)
        )
    names = ", ".join(s.name for s in pipeline_stages(root))
    print(f"dag check OK: every stage's params match what it read ({names})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dag", help="check dvc.yaml against what the stages really read")
    inner = parser.add_subparsers(dest="dag_command", required=True)
    chk = inner.add_parser("check", help="compare each stage's params: with params_read/*.json")
    chk.add_argument("--root", default=".", help="project root (default: .)")
    chk.set_defaults(func=_run)
