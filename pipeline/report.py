"""Stage ``report``: ``reports/report.md`` and ``reports/figures/*.png`` from metrics and logs.

It declares no ``params:`` in dvc.yaml: the whole ``params.yaml`` is a dep (the report prints all
of it), and the params are read as a plain dict, so no per-key read is recorded.
"""

from __future__ import annotations

from pathlib import Path

from hjepa.core.config import Params, to_dict
from hjepa.report import build_report
from pipeline._stage import run_stage

REPORT = Path("reports/report.md")
FIGURES = Path("reports/figures")


def body(params: Params) -> None:
    # to_dict reads the model wholesale, recording no per-key reads (see module docstring).
    build_report(Path("."), REPORT, FIGURES, params=to_dict(params))
    print(f"report: wrote {REPORT} and figures in {FIGURES}/")


if __name__ == "__main__":
    run_stage("report", body)
