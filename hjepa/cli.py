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
from hjepa.core.errors import UserError

# One module per subcommand, each with register(subparsers): the params tools know nothing of
# DVC; dag, doctor and compare live in the integration layer.
COMMANDS = {
    "params": "hjepa.tools.params_cmd",
    "dag": "hjepa.integration.dag",
    "doctor": "hjepa.integration.doctor",
    "compare": "hjepa.integration.compare_cmd",
    "audit": "hjepa.tools.audit_cmd",
    "export": "hjepa.export.export_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hjepa",
        description="H-JEPA pretraining pipeline: params validation, audits and reports.",
    )
    parser.add_argument("--version", action="version", version=f"hjepa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
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
