"""Probe readout sweep: probe the encoders that ``bench_quality.py --keep`` kept, again.

Pretraining is the expensive part of ``bench_quality.py``; the probe takes seconds. This script
loads each ``DIR/seed<N>`` that ``--keep DIR`` left (prepared data and ``models/encoder_ema.pt``)
and runs the probe stage's own ``run_probe_from_params`` once per variant, so readout choices
(``probe.*``) are compared on the very same encoders, seeds and splits. It prints the same
mean ± std table as ``bench_quality.py`` per variant, plus JSON lines.

    python benchmarks/bench_quality.py --keep /tmp/q                     # pretrain once
    python benchmarks/probe_sweep.py --keep /tmp/q --variant mean: \\
        --variant grid2:probe.pool_grid=2 \\
        --variant hier-grid2:probe.pool_grid=2,probe.features=hierarchy \\
        --variant knn-mean:probe.pool_grid=2,probe.knn_pool_grid=1

Only ``probe.*`` keys may vary: anything else would need another pretraining.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import accuracies, build_params, format_table, summarise  # noqa: E402

from hjepa.core.errors import UserError  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value,key=value`` → (name, {dotted key: YAML value}); only probe.* keys."""
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise UserError(f"--variant {text!r}: expected NAME:key=value,... (an empty list is fine)")
    overrides: dict[str, Any] = {}
    for item in filter(None, re.split(r",(?=[A-Za-z_.]+=)", rest)):
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("probe."):
            raise UserError(
                f"--variant {text!r}: {item!r} must be probe.<key>=<value> (other keys would "
                "need another pretraining: use bench_quality.py --set)"
            )
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def seed_dirs(keep: Path) -> list[tuple[int, Path]]:
    found = sorted(
        (int(p.name[4:]), p)
        for p in keep.glob("seed*")
        if p.name[4:].isdigit() and (p / "models/encoder_ema.pt").is_file()
    )
    if not found:
        raise UserError(f"{keep}: no seed<N>/models/encoder_ema.pt (run bench_quality.py --keep)")
    return found


def probe_row(
    name: str, seed: int, work: Path, params_file: Path, overrides: dict[str, Any]
) -> dict[str, Any]:
    from hjepa.eval.stage import run_probe_from_params

    params = build_params(params_file, overrides, seed, None, None)
    outcome = run_probe_from_params(params, work / "data/prepared", work / "models/encoder_ema.pt")
    row: dict[str, Any] = {"name": name, "seed": seed, "overrides": overrides}
    row.update(accuracies(outcome))
    row["feature_dim"] = outcome.feature_dim
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", required=True, help="the DIR given to bench_quality.py --keep")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--json-out", help="append the JSON lines to this file too")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in args.variant] or [("params", {})]
        seeds = seed_dirs(Path(args.keep))
        for _name, overrides in variants:  # fail fast on a bad key or value
            build_params(Path(args.params), overrides, seeds[0][0], None, None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, overrides in variants:
        rows = [probe_row(name, s, d, Path(args.params), overrides) for s, d in seeds]
        summary = summarise(name, rows)
        summary["feature_dim"] = rows[0]["feature_dim"]
        for doc in [*rows, summary]:
            line = json.dumps(doc, sort_keys=True)
            print(line, flush=True)
            if args.json_out:
                with open(args.json_out, "a") as fh:
                    fh.write(line + "\n")
        print(format_table(summary))
        print(f"feature dim {summary['feature_dim']}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
