"""``hjepa audit [params.yaml]``: show that every model/mask/EMA key has a measurable effect."""

from __future__ import annotations

import argparse
import sys

from hjepa.core.config import load_params
from hjepa.tools.audit import AuditRow, audit_params, format_table


def report(rows: list[AuditRow]) -> int:
    """Print the table; exit status 1 (naming the keys) if any key changed nothing."""
    print(format_table(rows))
    dead = [r.key for r in rows if not r.ok]
    if dead:
        print(
            f"error: {len(dead)} parameter(s) had no measurable effect: {', '.join(dead)}. "
            "Each must change the model, the masks, the loss or a training step; make the code "
            "read it, or remove it from the schema.",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(rows)} audited parameters have an effect")
    return 0


def _run(args: argparse.Namespace) -> int:
    return report(audit_params(load_params(args.file)))


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit",
        help="change each model/mask/ema key and show what it changes (exit 1 if nothing)",
    )
    parser.add_argument("file", nargs="?", default="params.yaml")
    parser.set_defaults(func=_run)
