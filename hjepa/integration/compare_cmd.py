"""``hjepa compare``: params that differ and metric deltas across experiments, as markdown.

Without arguments it runs ``dvc exp show --json`` in the project; ``--exp-json`` reads a saved
copy of that output; positional paths compare metrics directories, files or project copies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hjepa.core.errors import UserError
from hjepa.integration.compare import (
    experiments_from_exp_show,
    experiments_from_paths,
    git_log_reader,
    write_comparison,
)
from hjepa.integration.dvc_repo import exp_show


def _run(args: argparse.Namespace) -> int:
    project = Path(args.project)
    if args.sources and args.exp_json:
        raise UserError("give either metrics paths or --exp-json, not both")
    if args.sources:
        exps = experiments_from_paths([Path(p) for p in args.sources])
    else:
        if args.exp_json:
            try:
                doc = json.loads(Path(args.exp_json).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UserError(f"{args.exp_json}: cannot read exp-show JSON ({exc})") from None
        else:
            doc = exp_show(project)
        exps = experiments_from_exp_show(
            doc, git_log_reader(project), include_workspace=args.include_workspace
        )
    out = Path(args.out)
    text = write_comparison(exps, out, Path(args.figures))
    print(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare experiments: differing params, metric deltas, loss curves",
        description=__doc__,
    )
    parser.add_argument(
        "sources",
        nargs="*",
        help="metrics directories, metrics JSON files or project directories (first = baseline); "
        "default: the experiments of `dvc exp show --json`",
    )
    parser.add_argument("--exp-json", help="read saved `dvc exp show --json` output from a file")
    parser.add_argument("--project", default=".", help="project directory for dvc/git (default .)")
    parser.add_argument(
        "--include-workspace",
        action="store_true",
        help="also list the workspace row of `dvc exp show`",
    )
    parser.add_argument("--out", default="reports/compare.md", help="markdown output file")
    parser.add_argument(
        "--figures", default="reports/compare_figures", help="directory for the loss overlay PNG"
    )
    parser.set_defaults(func=_run)
