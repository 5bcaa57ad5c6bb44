"""Register the per-experiment flow as a deployment of a Prefect work pool.

``python -m flows.pool_deploy --pool hjepa`` creates the process work pool ``hjepa`` if it does
not exist and registers ``hjepa-pool-experiment/pool`` on it. No code is uploaded anywhere: every
worker machine has its own clone of the git repository and starts its worker with
``HJEPA_PROJECT_DIR`` set to that clone. The deployment's one pull step moves each flow run into
that directory (Prefect resolves ``{{ $HJEPA_PROJECT_DIR }}`` from the worker's environment when
the run starts), and the flow then checks out the commit it was asked for.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from flows.pool import POOL_DEPLOYMENT, hjepa_pool_experiment

PROJECT_DIR_ENV = "HJEPA_PROJECT_DIR"
ENTRYPOINT = "flows/pool.py:hjepa_pool_experiment"
DEPLOYMENT_NAME = POOL_DEPLOYMENT.split("/")[1]


class WorkerClone:
    """Deployment "storage" that is the worker's own clone: nothing to upload or download.

    Prefect asks a deployment's storage for its pull step; this one only changes into the
    directory named by the worker's ``HJEPA_PROJECT_DIR``.
    """

    pull_interval = None

    def set_base_path(self, path: Path) -> None:
        """Nothing to do: the code is already on every worker."""

    @property
    def destination(self) -> Path:
        return Path.cwd()

    async def pull_code(self) -> None:
        """Nothing to pull: each worker's clone is kept by the flow itself (``git checkout``)."""

    def to_pull_step(self) -> dict[str, Any]:
        step = "prefect.deployments.steps.set_working_directory"
        return {step: {"directory": "{{ $" + PROJECT_DIR_ENV + " }}"}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkerClone)

    __hash__ = object.__hash__


def pool_deployment(pool: str) -> RunnerDeployment:
    """The per-experiment deployment on work pool ``pool``, running from the worker's clone."""
    deployment = hjepa_pool_experiment.to_deployment(  # the sync variant: a RunnerDeployment
        name=DEPLOYMENT_NAME,
        work_pool_name=pool,
        description=(
            "One DVC experiment, run in the worker's clone ($HJEPA_PROJECT_DIR); started by "
            "hjepa-experiments-pool"
        ),
        tags=["hjepa", "dvc"],
    )
    assert isinstance(deployment, RunnerDeployment)
    deployment.storage = WorkerClone()
    deployment.entrypoint = ENTRYPOINT
    return deployment


def ensure_process_pool(pool: str) -> bool:
    """Create the process work pool ``pool`` unless it exists; True if it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.pool_deploy",
        description="Create a process work pool (if missing) at PREFECT_API_URL and register "
        f"the {POOL_DEPLOYMENT} deployment on it.",
    )
    parser.add_argument("--pool", required=True, help="work pool name, e.g. hjepa")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not PREFECT_API_URL.value():
        # Without it Prefect would register the pool with a throw-away server of this process.
        print(
            "error: PREFECT_API_URL is not set, so there is no server to register the pool with; "
            "point it at the server the workers use, e.g. "
            "`prefect config set PREFECT_API_URL=http://SERVER:4200/api`",
            file=sys.stderr,
        )
        return 2
    created = ensure_process_pool(args.pool)
    deployment_id = pool_deployment(args.pool).apply()
    what = "created" if created else "exists"
    print(f"work pool {args.pool} ({what}); deployment {POOL_DEPLOYMENT} = {deployment_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
