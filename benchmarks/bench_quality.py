"""Representation-quality benchmark: does pretraining beat the random-init encoder, over seeds?

For each seed it runs prepare → pretrain → probe in its own temporary work directory (the same
library functions the DVC stages call; ``seed`` changes the split, the init, the masks and the
batches) and reports, as mean ± std over seeds, test linear-probe and k-NN accuracy of the
pretrained EMA encoder, the same architecture at random init, and raw pixels, plus pretraining
wall time and the final representation diagnostics. Every seed's result and the summary are also
printed as JSON lines (``--json-out`` appends them to a file) for later aggregation. Progress bars
go to stderr (``2>/dev/null`` hides them).

    python benchmarks/bench_quality.py                               # params.yaml, seeds 0,1,2
    python benchmarks/bench_quality.py --dataset digits --dataset cifar-dev \
        --dataset animal-shape=/tmp/wheels/animal_mnist-0.4-py3-none-any.whl  # the menu
    python benchmarks/bench_quality.py --set model.vicreg_weight=0 --name no-vicreg
    python benchmarks/bench_quality.py --data-source image_folder --data-path data/raw \\
        --set data.channels=3 --set data.image_size=32 --set model.patch_size=4
    python benchmarks/bench_quality.py --seeds 3 --jobs 3 --threads 1   # seeds in parallel
    python benchmarks/bench_quality.py --keep /tmp/q   # keep encoders for probe_sweep.py

``--set`` takes dotted keys and YAML values (``--set mask.target_scale=[0.1,0.2]``); the result
is validated by hjepa.core.config like params.yaml itself. ``--dataset`` picks named sets, one per
kind of data (quality_sets.py: digits, animal-shape, letters, cifar-dev, cifar-5k, mnist,
fashion-mnist), each with the params it needs applied before ``--set``; with ``--keep DIR`` their
runs are kept in ``DIR/<set>/seed<N>``.

After each set's table comes its verdict against both baselines, the targets of issue 20: the
paired gain over random init in units of its std over seeds (> 3σ is a result; one seed cannot
say), and whether the pretrained encoder reaches raw pixels (mean over seeds), on the linear probe
and on k-NN. The k-NN is held against the pixels twice: read like the encoders (standardised) and
as they are (``plain``, the usual pixel k-NN, the stronger one on centred glyphs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality_sets import SETS, QualitySet, parse_dataset  # noqa: E402

from hjepa.core.config import (  # noqa: E402
    Params,
    apply_overrides,
    parse_assignments,
    parse_params,
)
from hjepa.core.errors import UserError  # noqa: E402

METRICS = (
    ("pretrained", "linear"),
    ("pretrained", "knn"),
    ("random_init", "linear"),
    ("random_init", "knn"),
    ("pixels", "linear"),
    ("pixels", "knn"),
)
SIGMAS = 3.0  # issue 20's bar: the paired gain over random init must exceed 3 std over seeds


def build_params(
    params_file: Path, overrides: dict[str, Any], seed: int, source: str | None, path: str | None
) -> Params:
    """Validated params for one seed: file, then data source/path, then ``--set``, then seed."""
    raw = yaml.safe_load(params_file.read_text()) or {}
    extra: dict[str, Any] = {}
    if source is not None:
        extra["data.source"] = source
    if path is not None:
        extra["data.path"] = str(Path(path).resolve())
    merged = apply_overrides(raw, {**extra, **overrides, "seed": seed})
    return parse_params(merged, f"{params_file} + overrides")


def run_seed(job: dict[str, Any]) -> dict[str, Any]:
    """prepare → pretrain → probe for one seed in a fresh temp dir; one result row."""
    if job["threads"]:
        import torch

        torch.set_num_threads(job["threads"])
    from hjepa.data.build import prepare_dataset
    from hjepa.eval.stage import run_probe_from_params
    from hjepa.train.trainer import Pretrainer, PretrainPaths

    params = build_params(
        Path(job["params"]), job["overrides"], job["seed"], job["source"], job["path"]
    )
    with contextlib.ExitStack() as stack:
        if job["keep"]:
            work = Path(job["keep"]) / f"seed{job['seed']}"
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_quality_")))
        data_dir = work / "data/prepared"
        prepare_dataset(params, data_dir, work / "metrics/data.json")
        paths = PretrainPaths.under(work, data_dir=data_dir)
        t0 = time.perf_counter()
        pre = Pretrainer(params, paths, log=lambda _m: None, experiment="bench").run()
        pretrain_s = time.perf_counter() - t0
        outcome = run_probe_from_params(params, data_dir, paths.encoder)
    row: dict[str, Any] = {
        "name": job["name"],
        "dataset": job["dataset"],
        "seed": job["seed"],
        "overrides": job["overrides"],
    }
    row.update(accuracies(outcome))
    row.update(
        pretrain_wall_s=round(pretrain_s, 2),
        train_loop_s=pre["wall_time_s"],
        loss=pre["loss"],
        effective_rank=pre["effective_rank"],
        position_share=pre["position_share"],
    )
    return row


def accuracies(outcome: Any) -> dict[str, float]:
    """``{source}_{metric}`` test accuracies of a ``ProbeOutcome`` (the table's six cells), and
    ``pixels_plain_knn``: the pixels' k-NN without standardisation (the stricter pixel k-NN)."""
    out = {
        f"{source}_{metric}": float(getattr(getattr(outcome, source), f"{metric}_top1"))
        for source, metric in METRICS
    }
    out["pixels_plain_knn"] = float(outcome.pixels_plain_knn_top1)
    return out


def summarise(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (sample) std over seeds of every numeric column, plus the gains over random init."""
    out: dict[str, Any] = {"name": name, "summary": True, "seeds": [r["seed"] for r in rows]}
    keys = [f"{s}_{m}" for s, m in METRICS] + [
        "pixels_plain_knn",
        "pretrain_wall_s",
        "effective_rank",
        "position_share",
    ]
    if "dataset" in rows[0]:
        out["dataset"] = rows[0]["dataset"]
    for r in rows:
        for metric in ("linear", "knn"):
            r[f"gain_{metric}"] = r[f"pretrained_{metric}"] - r[f"random_init_{metric}"]
            r[f"over_pixels_{metric}"] = r[f"pretrained_{metric}"] - r[f"pixels_{metric}"]
        if "pixels_plain_knn" in r:  # rows written before it existed lack it
            r["over_pixels_plain_knn"] = r["pretrained_knn"] - r["pixels_plain_knn"]
    paired = [
        "gain_linear",
        "gain_knn",
        "over_pixels_linear",
        "over_pixels_knn",
        "over_pixels_plain_knn",
    ]
    for key in [*keys, *paired]:
        if key not in rows[0]:  # re-probes (probe_sweep.py) have no pretraining figures
            continue
        values = [float(r[key]) for r in rows]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["verdict"] = verdict(out)
    return out


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """Per probe: the gain over random init in std units and whether it beats ``SIGMAS`` (None
    from one seed, where no spread exists), and whether pretrained ≥ raw pixels (means); for the
    k-NN also against the pixels read without standardisation (None when not measured)."""
    out: dict[str, Any] = {}
    several = len(summary["seeds"]) > 1
    for metric in ("linear", "knn"):
        gain, std = summary[f"gain_{metric}_mean"], summary[f"gain_{metric}_std"]
        out[f"init_sigmas_{metric}"] = gain / std if several and std > 0 else None
        out[f"beats_init_{metric}"] = bool(gain > SIGMAS * std) if several else None
        out[f"reaches_pixels_{metric}"] = bool(summary[f"over_pixels_{metric}_mean"] >= 0)
    plain = summary.get("over_pixels_plain_knn_mean")
    out["reaches_plain_pixels_knn"] = None if plain is None else bool(plain >= 0)
    return out


def format_table(summary: dict[str, Any]) -> str:
    """Human-readable mean ± std table (accuracies in %)."""

    def cell(key: str, scale: float = 100.0, digits: int = 1) -> str:
        m, s = summary[f"{key}_mean"] * scale, summary[f"{key}_std"] * scale
        return f"{m:.{digits}f} ± {s:.{digits}f}"

    lines = [
        f"{summary['name']}{' on ' + summary['dataset'] if summary.get('dataset') else ''} "
        f"(seeds {summary['seeds']})",
        f"{'encoder':<14}{'linear %':>16}{'20-NN %':>16}",
    ]
    for source, label in (
        ("pretrained", "pretrained EMA"),
        ("random_init", "random init"),
        ("pixels", "raw pixels"),
    ):
        lines.append(f"{label:<14}{cell(source + '_linear'):>16}{cell(source + '_knn'):>16}")
    if "pixels_plain_knn_mean" in summary:
        lines.append(f"{'  plain k-NN':<14}{'—':>16}{cell('pixels_plain_knn'):>16}")
    lines.append(f"{'gain vs init':<14}{cell('gain_linear'):>16}{cell('gain_knn'):>16}")
    if "pretrain_wall_s_mean" in summary:
        lines.append(
            f"pretrain wall {cell('pretrain_wall_s', 1.0)} s; effective rank "
            f"{cell('effective_rank', 1.0)}; position share {cell('position_share', 1.0, 3)}"
        )
    return "\n".join([*lines, *format_verdict(summary)])


def _yes(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "NO")


def format_verdict(summary: dict[str, Any]) -> list[str]:
    """Two lines: pretrained against random init (paired gain, > 3σ?) and against raw pixels."""
    v = summary["verdict"]
    vs_init, vs_pixels = [], []
    for metric, label in (("linear", "linear"), ("knn", "k-NN")):
        gain = 100 * summary[f"gain_{metric}_mean"]
        beats = v[f"beats_init_{metric}"]
        if beats is None:
            vs_init.append(f"{label} {gain:+.1f} (one seed: n/a)")
        else:
            sig = v[f"init_sigmas_{metric}"]
            spread = f" = {sig:.1f}σ" if sig is not None else ""
            std = 100 * summary[f"gain_{metric}_std"]
            vs_init.append(f"{label} {gain:+.1f} ± {std:.1f}{spread}: {_yes(beats)}")
        pre, pix = (100 * summary[f"{s}_{metric}_mean"] for s in ("pretrained", "pixels"))
        vs_pixels.append(f"{label} {pre:.1f} vs {pix:.1f}: {_yes(v[f'reaches_pixels_{metric}'])}")
    if v.get("reaches_plain_pixels_knn") is not None:
        pre, plain = (100 * summary[f"{k}_mean"] for k in ("pretrained_knn", "pixels_plain_knn"))
        flag = _yes(v["reaches_plain_pixels_knn"])
        vs_pixels.append(f"k-NN {pre:.1f} vs plain pixels {plain:.1f}: {flag}")
    return [
        f"verdict vs random init (paired gain > {SIGMAS:g}σ?): " + "; ".join(vs_init),
        "verdict vs raw pixels (pretrained >= pixels?): " + "; ".join(vs_pixels),
    ]


@dataclass(frozen=True)
class Target:
    """One data set to run every seed on: its label, data source and path, and set params."""

    label: str
    source: str | None
    path: str | None
    overrides: dict[str, Any]
    keep_subdir: str = ""


def resolve_targets(args: argparse.Namespace, work: Path) -> list[Target]:
    """``--dataset`` entries (written out as image folders under ``work``), or the single set of
    ``--data-source``/``--data-path``/params.yaml."""
    if not args.dataset:
        return [Target("", args.data_source, args.data_path, {})]
    if args.data_source or args.data_path:
        raise UserError("--dataset names its own data; leave out --data-source and --data-path")
    picked: list[tuple[QualitySet, Path | None]] = [parse_dataset(d) for d in args.dataset]
    names = [qs.name for qs, _ in picked]
    if len(set(names)) != len(names):
        raise UserError(f"--dataset: each set once, got {', '.join(names)}")
    return [
        Target(qs.name, qs.source, qs.materialise(path, work), qs.overrides, qs.name)
        for qs, path in picked
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME[=PATH]",
        help=f"a named set, repeatable: {', '.join(SETS)} (see quality_sets.py)",
    )
    parser.add_argument("--data-source", choices=["digits", "image_folder", "cifar10"])
    parser.add_argument("--data-path", help="image folder root or CIFAR-10 tarball/folder")
    parser.add_argument("--name", default="", help="label of this configuration in the output")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    parser.add_argument("--json-out", help="append the JSON lines to this file too")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep each seed's prepared data, checkpoints and encoder in DIR/seed<N> (with "
        "--dataset: DIR/<set>/seed<N>), to probe them again, e.g. with probe_sweep.py, without "
        "pretraining again",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_quality_sets_") as sets_dir:
        try:
            overrides = parse_assignments(args.set)
            if args.seeds < 1:
                raise UserError(f"--seeds must be >= 1, got {args.seeds}")
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            targets = []
            # Validate up front, so a bad --set fails in a second, not after a pretraining.
            for t in resolve_targets(args, Path(sets_dir)):
                p = build_params(
                    Path(args.params), {**t.overrides, **overrides}, seeds[0], t.source, t.path
                )
                targets.append(t if t.label else replace(t, label=p.data.source))
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        name = args.name or (" ".join(args.set) or "defaults")
        summaries = [run_target(args, name, target, overrides, seeds) for target in targets]
    if len(summaries) > 1:
        print(format_overview(summaries))
    return 0


def format_overview(summaries: list[dict[str, Any]]) -> str:
    """One row per set: each verdict (the k-NN against pixels read both ways), and whether the
    set meets all of them."""
    head = [
        "set",
        "> 3σ init linear",
        "> 3σ init k-NN",
        ">= pixels linear",
        ">= pixels k-NN",
        ">= plain px k-NN",
    ]
    keys = [
        "beats_init_linear",
        "beats_init_knn",
        "reaches_pixels_linear",
        "reaches_pixels_knn",
        "reaches_plain_pixels_knn",
    ]
    lines = ["verdict per set", "  ".join(f"{h:<16}" for h in head) + "  all"]
    for s in summaries:
        flags = [s["verdict"][k] for k in keys]
        cells = [s["dataset"], *(_yes(f) for f in flags)]
        all_met = "n/a" if None in flags else _yes(all(flags))
        lines.append("  ".join(f"{c:<16}" for c in cells) + f"  {all_met}")
    return "\n".join(lines)


def run_target(
    args: argparse.Namespace,
    name: str,
    target: Target,
    overrides: dict[str, Any],
    seeds: list[int],
) -> dict[str, Any]:
    """Every seed on one data set: a JSON line per seed, then the summary, table and verdict."""
    keep = str(Path(args.keep) / target.keep_subdir) if args.keep else None
    jobs = [
        {
            "name": name,
            "dataset": target.label,
            "seed": s,
            "overrides": {**target.overrides, **overrides},
            "params": args.params,
            "source": target.source,
            "path": target.path,
            "threads": args.threads,
            "keep": keep,
        }
        for s in seeds
    ]
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        """Print (and append) each result as soon as it exists: a long run killed midway keeps
        the seeds it finished."""
        line = json.dumps(row, sort_keys=True)
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "a") as fh:
                fh.write(line + "\n")

    if args.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for row in pool.map(run_seed, jobs):
                rows.append(row)
                emit(row)
    else:
        for job in jobs:
            rows.append(run_seed(job))
            emit(rows[-1])
    summary = summarise(name, rows)
    emit(summary)
    print(format_table(summary))
    return summary


if __name__ == "__main__":
    sys.exit(main())
