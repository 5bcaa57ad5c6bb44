"""Serve the flows as deployments of a (self-hosted) Prefect server, run by this process.

``python -m flows.serve --cron "0 2 * * *" --project-dir .`` registers

* ``hjepa-pipeline/scheduled``: the whole DVC pipeline on the cron schedule, one run at a time
  (two runs in one project would contend for DVC's lock);
* ``hjepa-experiments/on-demand``: the experiments flow, unscheduled, started from the UI
  (Custom run) or ``prefect deployment run``.
* ``hjepa-experiments-pool/on-demand``: the same, but each experiment is its own flow run on the
  work pool's workers (``flows.pool``; the pool's deployment comes from ``flows.pool_deploy``).

and then runs their flow runs in subprocesses of this process until it is stopped. The schedule
stays active when this process stops (``pause_on_shutdown=False``), so a restart resumes it.
Parameters are editable in the UI because the flows' signatures are typed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from pydantic import ValidationError

from flows.experiments import hjepa_experiments
from flows.pipeline import hjepa_pipeline
from flows.pool import hjepa_experiments_pool
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import pipeline_stages

DEFAULT_CRON = "0 2 * * *"
PIPELINE_DEPLOYMENT = "scheduled"
EXPERIMENTS_DEPLOYMENT = "on-demand"


def cron_schedule(cron: str, timezone: str) -> CronSchedule:
    """The schedule, or a UserError naming the bad option."""
    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise UserError(
            f"--cron {cron!r} / --timezone {timezone!r}: {why}; expected five cron fields "
            "(minute hour day month weekday), e.g. '0 2 * * *', and an IANA zone like 'UTC'"
        ) from None


def built(deployment: object) -> RunnerDeployment:
    """The deployment ``Flow.to_deployment`` returned. Prefect types it as sync-or-async (it
    dispatches on the caller); called from this synchronous code it is the deployment itself."""
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError(
            f"Flow.to_deployment returned {type(deployment).__name__}, not a deployment"
        )
    return deployment


def build_deployments(
    project_dir: str | Path, cron: str = DEFAULT_CRON, timezone: str = "UTC"
) -> list[RunnerDeployment]:
    """The deployments, with ``project_dir`` (made absolute) as their default parameter."""
    root = Path(project_dir).resolve()
    pipeline_stages(root)  # fail now, not at 2 a.m., if this is not a DVC project
    made = [
        hjepa_pipeline.to_deployment(
            name=PIPELINE_DEPLOYMENT,
            schedules=[cron_schedule(cron, timezone)],
            parameters={"project_dir": str(root)},
            concurrency_limit=1,
            description=f"dvc.yaml pipeline of {root}, on schedule '{cron}' ({timezone})",
            tags=["hjepa", "dvc"],
        ),
        hjepa_experiments.to_deployment(
            name=EXPERIMENTS_DEPLOYMENT,
            parameters={"project_dir": str(root)},
            description=f"DVC experiments (override sets) in {root}",
            tags=["hjepa", "dvc"],
        ),
        hjepa_experiments_pool.to_deployment(
            name=EXPERIMENTS_DEPLOYMENT,
            parameters={"project_dir": str(root)},
            description=f"DVC experiments from {root}, one flow run each on the work pool",
            tags=["hjepa", "dvc"],
        ),
    ]
    return [built(deployment) for deployment in made]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.serve",
        description="Register the hjepa flows with the Prefect server at PREFECT_API_URL and "
        "run their flow runs until stopped (Ctrl-C).",
    )
    parser.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"pipeline schedule (default '{DEFAULT_CRON}')"
    )
    parser.add_argument(
        "--timezone", default="UTC", help="time zone of the cron schedule (default UTC)"
    )
    parser.add_argument(
        "--project-dir", default=".", help="project root with dvc.yaml (default: current dir)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        deployments = build_deployments(args.project_dir, args.cron, args.timezone)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(*deployments, pause_on_shutdown=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
