"""Turn ``dvc exp show --json`` into the rows and the markdown the experiments flow publishes.

The parsing of exp-show output is ``hjepa.integration.compare``'s (the same code behind
``hjepa compare``), so the Prefect artifacts and the CLI name params and metrics identically.
Three views, answer first: ``summary_rows`` (a dozen columns: what was changed and what came
out), ``experiment_rows`` (every param override and metric), ``comparison_markdown`` (metrics
that differ first, experiments in run order, loss curves and probe bars inline).
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hjepa.integration.compare import (
    Experiment,
    compare_markdown,
    experiments_from_exp_show,
    loss_overlay,
)
from hjepa.report import figures

# The summary's metric columns: (column title, metric key as experiment_rows names it).
HEADLINE_METRICS = (
    ("linear top-1", "probe.linear_top1"),
    ("k-NN top-1", "probe.knn_top1"),
    ("random init (linear)", "probe.random_init.linear_top1"),
    ("gain (linear)", "probe.gain_over_random_init"),
)
WALL_COLUMN = "wall time (s)"


def only_experiments(doc: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """``doc`` with every baseline commit kept but only the experiments called ``names``.

    The baseline stays so the comparison's deltas are against the commit the experiments ran
    from; other (older) experiments are dropped.
    """
    wanted = set(names)
    out = []
    for commit in doc if isinstance(doc, list) else []:
        if not isinstance(commit, dict) or commit.get("rev") == "workspace":
            continue
        exps = [e for e in commit.get("experiments") or [] if _exp_name(e) in wanted]
        if exps:
            out.append({**commit, "experiments": exps})
    return out


def _exp_name(exp: Any) -> str | None:
    if not isinstance(exp, dict):
        return None
    revs = exp.get("revs") or [{}]
    return exp.get("name") or (revs[0].get("name") if isinstance(revs[0], dict) else None)


def experiment_rows(
    doc: Any,
    names: Sequence[str],
    overrides: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, str],
    wall: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per experiment, in ``names`` order, all with the same columns.

    Columns: ``experiment``, ``status``, ``wall time (s)`` (only with ``wall``), every overridden
    param key (the value that experiment really used, read back from DVC; for one DVC has no
    results of, e.g. killed in the queue, the value it was asked to run with), then every metric
    (``<metrics file stem>.<key>``).
    """
    found = {e.name: e for e in experiments_from_exp_show(only_experiments(doc, names))}
    param_keys = list(dict.fromkeys(k for o in overrides for k in o))
    metric_keys = list(dict.fromkeys(k for n in names if n in found for k in found[n].metrics))
    rows = []
    for name, asked in zip(names, overrides, strict=True):
        exp = found.get(name, Experiment(name=name))
        row: dict[str, Any] = {"experiment": name, "status": statuses.get(name, "Unknown")}
        if wall is not None:
            row[WALL_COLUMN] = round(wall[name]) if name in wall else None
        row.update({k: exp.params.get(k, asked.get(k)) for k in param_keys})
        for key in metric_keys:
            column = key if key not in row else f"metric {key}"
            row[column] = exp.metrics.get(key)
        rows.append(row)
    return rows


def summary_rows(
    rows: Sequence[Mapping[str, Any]], overrides: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``experiment_rows`` cut to the answer: experiment, status, the overridden params, linear
    and k-NN top-1, the random-init baseline, the gain over it and the wall time; accuracies in
    percent with one decimal. The same columns whether or not a metric exists."""
    param_keys = list(dict.fromkeys(k for o in overrides for k in o))
    out = []
    for row in rows:
        short: dict[str, Any] = {"experiment": row["experiment"], "status": row["status"]}
        short.update({k: row.get(k) for k in param_keys})
        for title, key in HEADLINE_METRICS:
            value = row.get(key, row.get(f"metric {key}"))
            short[title] = None if value is None else round(100 * value, 1)
        short[WALL_COLUMN] = row.get(WALL_COLUMN)
        out.append(short)
    return out


def in_run_order(exps: Sequence[Experiment], names: Sequence[str]) -> list[Experiment]:
    """The baseline commit(s) first, then the experiments in the order they were run."""
    rank = {name: i for i, name in enumerate(names)}
    base = [e for e in exps if e.name not in rank]
    return base + sorted((e for e in exps if e.name in rank), key=lambda e: rank[e.name])


def comparison_markdown(
    doc: Any,
    names: Sequence[str],
    log_reader: Callable[[str], pd.DataFrame | None] | None = None,
) -> str:
    """``hjepa compare``'s markdown for these experiments against their baseline commit, in run
    order, with the loss curves and probe bars inline (``log_reader(rev)`` gives the curves)."""
    exps = in_run_order(experiments_from_exp_show(only_experiments(doc, names), log_reader), names)
    if not exps:
        return "# Experiment comparison\n\nNo experiment of this run has results."
    return compare_markdown(exps) + figures_markdown(exps)


def figures_markdown(exps: Sequence[Experiment]) -> str:
    """The loss overlay and the probe bars as PNG data URIs: a Prefect markdown artifact cannot
    show a file, only a URL, and a data URI is one that needs no server."""
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        loss = loss_overlay(exps, Path(tmp) / "loss.png")
        if loss is not None:
            parts += ["## Pretraining loss", "", _data_uri_image("loss curves", loss), ""]
        bars = [
            (e.name, e.metrics.get("probe.linear_top1"), e.metrics.get("probe.knn_top1"))
            for e in exps
            if "probe.linear_top1" in e.metrics
        ]
        if bars:
            png = figures.probe_bars(bars, Path(tmp) / "probe.png")
            parts += ["## Probe accuracy", "", _data_uri_image("probe accuracy", png), ""]
    return "\n" + "\n".join(parts) if parts else ""


def _data_uri_image(alt: str, png: Path) -> str:
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"
