"""The experiment report (``reports/report.md`` + figures) and the ``hjepa compare`` summary."""

from hjepa.report.build import build_report

__all__ = ["build_report"]
