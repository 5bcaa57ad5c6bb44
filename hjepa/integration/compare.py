"""Side-by-side comparison of experiments: params that differ, metric deltas, overlaid losses.

Sources: the JSON of ``dvc exp show --json`` (DVC 3.x: a list of commits, each with ``data``
and ``experiments[].revs[]``), or metrics directories / files / project directories on disk. The
exp-show format is parsed defensively: failed or queued experiments (``data`` null, ``error``
set, metric files that could not be read) are kept out or shown without the missing numbers
instead of crashing the comparison.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hjepa.core.errors import UserError
from hjepa.core.io import write_text
from hjepa.report import figures
from hjepa.report.inputs import flatten
from hjepa.report.markdown import fmt, image, table

__all__ = [
    "Experiment",
    "compare_markdown",
    "experiments_from_exp_show",
    "experiments_from_paths",
    "git_log_reader",
    "loss_overlay",
    "write_comparison",
]

LOG_PATH = "metrics/pretrain_log.tsv"


@dataclass
class Experiment:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    log: pd.DataFrame | None = None


def _numeric_metrics(metric_files: dict[str, Any]) -> dict[str, float]:
    """``{file: document}`` → ``{"<file stem>.<dotted key>": number}`` (numbers only)."""
    out: dict[str, float] = {}
    for file, doc in metric_files.items():
        stem = Path(file).stem
        for key, value in flatten(doc).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{stem}.{key}" if key else stem] = float(value)
    return out


def _exp_params(params: Any) -> dict[str, Any]:
    """exp-show ``params`` → dotted keys; keys of files other than params.yaml get a prefix."""
    out: dict[str, Any] = {}
    if not isinstance(params, dict):
        return out
    for file, entry in params.items():
        data = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(data, dict):
            continue
        prefix = "" if file == "params.yaml" else f"{file}:"
        out.update({f"{prefix}{k}": v for k, v in flatten(data).items()})
    return out


def _exp_metrics(metrics: Any) -> dict[str, float]:
    docs: dict[str, Any] = {}
    if isinstance(metrics, dict):
        for file, entry in metrics.items():
            if isinstance(entry, dict) and isinstance(entry.get("data"), dict):
                docs[file] = entry["data"]
    return _numeric_metrics(docs)


def _from_rev(
    entry: dict[str, Any], fallback: str, log_reader: Callable[[str], pd.DataFrame | None] | None
) -> Experiment | None:
    data = entry.get("data")
    if not isinstance(data, dict) or entry.get("error"):
        return None
    rev = str(entry.get("rev") or data.get("rev") or fallback)
    name = entry.get("name") or (rev[:7] if rev != "workspace" else "workspace")
    log = log_reader(rev) if log_reader else None
    return Experiment(
        name=str(name),
        params=_exp_params(data.get("params")),
        metrics=_exp_metrics(data.get("metrics")),
        log=log,
    )


def experiments_from_exp_show(
    doc: Any,
    log_reader: Callable[[str], pd.DataFrame | None] | None = None,
    include_workspace: bool = False,
) -> list[Experiment]:
    """Experiments in ``dvc exp show --json`` output: each baseline commit, then its experiments.

    The workspace row is left out (it repeats the baseline or the last applied experiment) unless
    ``include_workspace`` or unless it is the only row with data. ``log_reader(rev)`` may return
    the pretrain log of a revision (``"workspace"`` for the working tree).
    """
    if not isinstance(doc, list):
        raise UserError(
            "dvc exp show --json: expected a JSON list of commits, got "
            f"{type(doc).__name__}; is this the output of `dvc exp show --json`?"
        )
    found: list[Experiment] = []
    workspace: Experiment | None = None
    for commit in doc:
        if not isinstance(commit, dict):
            continue
        if commit.get("rev") == "workspace":
            workspace = _from_rev(commit, "workspace", log_reader)
            continue
        base = _from_rev(commit, "commit", log_reader)
        if base is not None:
            found.append(base)
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") if isinstance(exp, dict) else None
            if not revs:
                continue
            latest = revs[0]
            if isinstance(latest, dict):
                if not latest.get("name") and exp.get("name"):
                    latest = {**latest, "name": exp["name"]}
                item = _from_rev(latest, "exp", log_reader)
                if item is not None:
                    found.append(item)
    if workspace is not None and (include_workspace or not found):
        found.insert(0, workspace)
    return found


def _read_log(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return frame if {"step", "loss"} <= set(frame.columns) else None


def git_log_reader(project: Path) -> Callable[[str], pd.DataFrame | None]:
    """Pretrain log of a revision: the working tree for ``workspace``, else ``git show`` (the log
    is a ``cache: false`` out, so DVC commits it into each experiment's git ref)."""

    def read(rev: str) -> pd.DataFrame | None:
        if rev == "workspace":
            return _read_log(project / LOG_PATH)
        proc = subprocess.run(
            ["git", "show", f"{rev}:{LOG_PATH}"], cwd=project, capture_output=True, text=True
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        try:
            frame = pd.read_csv(io.StringIO(proc.stdout), sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            return None
        return frame if {"step", "loss"} <= set(frame.columns) else None

    return read


def _load_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read metrics JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object of metrics")
    return doc


def _params_near(*candidates: Path) -> dict[str, Any]:
    import yaml

    for path in candidates:
        if path.is_file():
            try:
                raw = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise UserError(f"{path}: not valid YAML: {exc}") from None
            return flatten(raw) if isinstance(raw, dict) else {}
    return {}


def experiments_from_paths(paths: Sequence[Path]) -> list[Experiment]:
    """One experiment per path: a project directory (``metrics/`` + ``params.yaml``), a metrics
    directory (``*.json`` + optional ``pretrain_log.tsv``; params from ``params.yaml`` beside or
    above it), or a single metrics JSON file."""
    out: list[Experiment] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            metric_files = {path.name: _load_json(path)}
            params = _params_near(path.parent / "params.yaml", path.parent.parent / "params.yaml")
            log = _read_log(path.parent / "pretrain_log.tsv")
        elif path.is_dir():
            mdir = path / "metrics" if (path / "metrics").is_dir() else path
            metric_files = {p.name: _load_json(p) for p in sorted(mdir.glob("*.json"))}
            if not metric_files:
                raise UserError(f"{mdir}: no metrics *.json files in this directory")
            params = _params_near(path / "params.yaml", mdir.parent / "params.yaml")
            log = _read_log(mdir / "pretrain_log.tsv")
        else:
            raise UserError(f"{path}: no such metrics file or directory")
        out.append(
            Experiment(
                name=str(path), params=params, metrics=_numeric_metrics(metric_files), log=log
            )
        )
    return out


def _differing_params(exps: Sequence[Experiment]) -> list[str]:
    keys = sorted({k for e in exps for k in e.params})
    return [k for k in keys if len({json.dumps(e.params.get(k, None)) for e in exps}) > 1]


def _delta_cell(value: float | None, base: float | None) -> str:
    if value is None:
        return "—"
    if base is None:
        return fmt(value)
    return f"{fmt(value)} ({value - base:+.4g})"


def compare_markdown(exps: Sequence[Experiment], loss_figure: str | None = None) -> str:
    """The comparison as markdown; deltas are against the first experiment (the baseline).

    The metrics that differ come first (they are the answer), then the loss curves, then the
    metrics every experiment shares (e.g. the data set's class counts) in one column.
    """
    if not exps:
        raise UserError("nothing to compare: no experiments with results were found")
    names = [e.name for e in exps]
    lines = [
        "# Experiment comparison",
        "",
        f"Baseline: `{exps[0].name}`; deltas in parentheses are against it.",
        "",
        "## Params that differ",
        "",
    ]
    diff = _differing_params(exps)
    if diff:
        rows = [[f"`{k}`", *[fmt(e.params.get(k)) for e in exps]] for k in diff]
        lines += [table(["param", *names], rows), ""]
    else:
        lines += ["All experiments have the same params.", ""]
    metric_keys = list(dict.fromkeys(k for e in exps for k in e.metrics))
    changed = [k for k in metric_keys if len({e.metrics.get(k) for e in exps}) > 1]
    same = [k for k in metric_keys if k not in changed]
    lines += ["## Metrics", ""]
    if changed:
        rows = []
        for key in changed:
            base = exps[0].metrics.get(key)
            cells = [fmt(base)] + [_delta_cell(e.metrics.get(key), base) for e in exps[1:]]
            rows.append([f"`{key}`", *cells])
        lines += [table(["metric", *names], rows), ""]
    else:
        lines += ["No metric differs between the experiments." if same else "No metrics found.", ""]
    if loss_figure:
        lines += ["## Pretraining loss", "", image("loss curves", loss_figure), ""]
    if same:
        rows = [[f"`{k}`", fmt(exps[0].metrics.get(k))] for k in same]
        title = "## Metrics that are the same in every experiment"
        lines += [title, "", table(["metric", "value"], rows), ""]
    return "\n".join(lines)


def loss_overlay(exps: Sequence[Experiment], path: Path) -> Path | None:
    with_logs = [e for e in exps if e.log is not None and len(e.log)]
    if not with_logs:
        path.unlink(missing_ok=True)
        return None
    fig, ax = figures.plt.subplots(figsize=(7, 4))
    for exp in with_logs:
        assert exp.log is not None
        ax.plot(exp.log["step"], exp.log["loss"], label=exp.name)
    ax.set_xlabel("step")
    ax.set_ylabel("total loss")
    ax.set_title("Pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figures.save(fig, path)


def write_comparison(exps: Sequence[Experiment], out_file: Path, figure_dir: Path) -> str:
    """Write the markdown (and the loss overlay when any log exists); return the markdown."""
    fig = loss_overlay(exps, figure_dir / "compare_loss.png")
    rel = None
    if fig is not None:
        rel = Path(os.path.relpath(fig.resolve(), out_file.resolve().parent)).as_posix()
    text = compare_markdown(exps, rel)
    write_text(out_file, text + "\n")
    return text
