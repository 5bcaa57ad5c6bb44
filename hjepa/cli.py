"""The ``hjepa`` console script.

Problems a person can fix (bad params, missing files) are printed as one paragraph on stderr with
exit code 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hjepa import __version__
from hjepa.errors import UserError

# One module per subcommand under hjepa/commands/, each with register(subparsers).
COMMANDS = ["params", "dag", "doctor", "compare", "audit"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hjepa",
        description="H-JEPA pretraining pipeline: params validation, audits and reports.",
    )
    parser.add_argument("--version", action="version", version=f"hjepa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hjepa.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
