"""The experiments flow's artifacts: a short summary table, the full table, the comparison.

In Prefect's UI they are on the flow run's page (Artifacts tab) and under the run's task-free
"Artifacts" list of each key (``/artifacts/key/<key>`` shows the latest of a key across runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.exp_table import comparison_markdown, experiment_rows, summary_rows
from hjepa.integration.compare import git_log_reader
from hjepa.integration.dvc_repo import exp_show

SUMMARY_KEY = "hjepa-experiments-summary"
TABLE_KEY = "hjepa-experiments"
MARKDOWN_KEY = "hjepa-experiments-comparison"


def publish_artifacts(
    root: Path,
    run_name: str,
    names: Sequence[str],
    overrides: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, str],
    wall: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Read the experiments back from DVC, publish the three artifacts, return the full rows."""
    doc = exp_show(root)
    rows = experiment_rows(doc, names, overrides, statuses, wall)
    create_table_artifact(
        table=summary_rows(rows, overrides),
        key=SUMMARY_KEY,
        description=f"Experiments of flow run {run_name}: overrides, probe top-1 (%), wall time",
    )
    create_table_artifact(
        table=rows,
        key=TABLE_KEY,
        description=f"Experiments of flow run {run_name}: every overridden param and metric",
    )
    create_markdown_artifact(
        markdown=comparison_markdown(doc, names, git_log_reader(root)),
        key=MARKDOWN_KEY,
        description=f"Experiments of flow run {run_name} against their baseline commit",
    )
    return rows
