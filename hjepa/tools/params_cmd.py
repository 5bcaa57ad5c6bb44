"""``hjepa params check|show``: validate a params file, or print it resolved with defaults."""

from __future__ import annotations

import argparse

import yaml

from hjepa.core.config import load_params, to_dict


def _check(args: argparse.Namespace) -> int:
    load_params(args.file)
    print(f"{args.file}: OK")
    return 0


def _show(args: argparse.Namespace) -> int:
    params = load_params(args.file)
    print(yaml.safe_dump(to_dict(params), sort_keys=False), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("params", help="validate or show a params file")
    inner = parser.add_subparsers(dest="params_command", required=True)
    check = inner.add_parser("check", help="validate a params file (exit 2 if invalid)")
    check.add_argument("file", nargs="?", default="params.yaml")
    check.set_defaults(func=_check)
    show = inner.add_parser("show", help="print the resolved params, defaults included")
    show.add_argument("file", nargs="?", default="params.yaml")
    show.set_defaults(func=_show)
