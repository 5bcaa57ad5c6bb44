"""Turn ``dvc exp show --json`` into the rows and the markdown the experiments flow publishes.

The parsing of exp-show output is ``hjepa.integration.compare``'s (the same code behind
``hjepa compare``), so the Prefect artifacts and the CLI name params and metrics identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hjepa.integration.compare import Experiment, compare_markdown, experiments_from_exp_show


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
) -> list[dict[str, Any]]:
    """One row per experiment, in ``names`` order, all with the same columns.

    Columns: ``experiment``, ``status``, every overridden param key (the value that experiment
    really used, read back from DVC; for one DVC has no results of, e.g. killed in the queue, the
    value it was asked to run with), then every metric (``<metrics file stem>.<key>``).
    """
    found = {e.name: e for e in experiments_from_exp_show(only_experiments(doc, names))}
    param_keys = list(dict.fromkeys(k for o in overrides for k in o))
    metric_keys = list(dict.fromkeys(k for n in names if n in found for k in found[n].metrics))
    rows = []
    for name, asked in zip(names, overrides, strict=True):
        exp = found.get(name, Experiment(name=name))
        row: dict[str, Any] = {"experiment": name, "status": statuses.get(name, "Unknown")}
        row.update({k: exp.params.get(k, asked.get(k)) for k in param_keys})
        for key in metric_keys:
            column = key if key not in row else f"metric {key}"
            row[column] = exp.metrics.get(key)
        rows.append(row)
    return rows


def comparison_markdown(doc: Any, names: Sequence[str]) -> str:
    """``hjepa compare``'s markdown for these experiments against their baseline commit."""
    exps = experiments_from_exp_show(only_experiments(doc, names))
    if not exps:
        return "# Experiment comparison\n\nNo experiment of this run has results."
    return compare_markdown(exps)
