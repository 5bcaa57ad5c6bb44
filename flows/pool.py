"""Experiments across machines: each override set is its own flow run on a Prefect work pool.

``hjepa-experiments-pool`` (the parent) validates the override sets, then submits one run of the
``hjepa-pool-experiment/pool`` deployment per set (``run_deployment(..., timeout=0)``) and waits
for all of them, so N workers (one per machine, ``--limit 1``) run N experiments at once. Each
child runs in its worker's clone of the repository (see ``flows.pool_deploy``): it checks out the
parent's commit, runs ``dvc exp run --temp --pull`` and pushes the experiment to the git and DVC
remotes (``flows.remote``). The parent then pulls the experiment refs and publishes the same table
and comparison artifacts as ``hjepa-experiments``, with the same per-experiment statuses.

Stages that no override set touches (typically ``prepare``) would otherwise be computed once per
worker at the same time. They run first, once, as their own child run (``<prefix>-shared``); the
experiments after it restore those outputs from the DVC remote's run-cache instead.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, cast
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.states import Cancelled, Cancelling, State
from pydantic import Field

from flows.dvc_run import check_dvc
from flows.exp_artifacts import publish_artifacts
from flows.experiments import TIMEOUT
from flows.failure import failed_run, user_error_state
from flows.overrides import OverrideSet, checked_set_args
from flows.remote import (
    check_out,
    default_dvc_remote,
    pull_experiment_refs,
    push_experiment,
    pushed_head,
)
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import Stage, pipeline_stages

CHILD_FLOW = "hjepa-pool-experiment"
POOL_DEPLOYMENT = f"{CHILD_FLOW}/pool"
# After the deadline the children stop their own DVC commands and report; this long is left for
# that before the parent cancels what is still not done (e.g. never picked up by any worker).
STOP_GRACE_SECONDS = 120.0
POLL_SECONDS = 2.0


@flow(name=CHILD_FLOW, flow_run_name="{name}")
def hjepa_pool_experiment(
    name: str,
    set_args: list[str],
    rev: str,
    deadline: datetime,
    targets: list[str] | None = None,
    git_remote: str = "origin",
) -> str:
    """One experiment on a pool worker, in the worker's clone (the working directory).

    Args:
        name: the DVC experiment name.
        set_args: ``-S key=value`` arguments of ``dvc exp run``.
        rev: the commit to run from (the parent's HEAD; the git remote has it).
        deadline: when DVC and the stage it runs are stopped (UTC).
        targets: stages to run (with their upstream); empty or None runs the whole pipeline.
        git_remote: the git remote the experiment ref is pushed to.

    Returns:
        Where it ran (``host:clone``; also the first line of its log).
    """
    logger = get_run_logger()
    root = Path.cwd()
    where = f"{socket.gethostname()}:{root}"
    logger.info("experiment %s runs on worker clone %s", name, where)
    check_out(root, rev, git_remote)
    default_dvc_remote(root, logger.info)
    left = (deadline - datetime.now(UTC)).total_seconds()
    if left <= 0:
        raise TimeoutError(f"experiment {name}: its deadline {deadline.isoformat()} has passed")
    args = ["exp", "run", "--temp", "--pull", "--name", name, *set_args, *(targets or [])]
    check_dvc(args, root, logger.info, timeout=left)
    push_experiment(root, name, git_remote, logger.info)
    return where


def shared_stages(stages: Sequence[Stage], sets: Sequence[OverrideSet]) -> list[str]:
    """The stages whose params no override set touches, and whose upstream stages are shared too.

    A stage param ``data`` (a section) is touched by the override ``data.image_size`` and the
    param ``data.image_size`` by the override ``data``. With fewer than two sets there is nothing
    to share.
    """
    if len(sets) < 2:
        return []
    keys = {key for overrides in sets for key in overrides}
    shared: list[str] = []
    for stage in stages:  # dependency order: upstream stages are decided first
        touched = any(_overlaps(param, key) for param in stage.params for key in keys)
        if not touched and all(up in shared for up in stage.upstream):
            shared.append(stage.name)
    return shared


def _overlaps(param: str, key: str) -> bool:
    return param == key or param.startswith(f"{key}.") or key.startswith(f"{param}.")


def child_status(run: FlowRun, past_deadline: bool) -> str:
    """The table's status of a finished child run: ``Success``, ``Failed`` or ``Timeout``."""
    state = run.state
    if state is not None and state.is_completed():
        return "Success"
    return TIMEOUT if past_deadline else "Failed"


def submit(name: str, parameters: Mapping[str, Any]) -> UUID:
    """One child flow run of the pool deployment, scheduled now; returns without waiting."""
    run = run_deployment(
        POOL_DEPLOYMENT, parameters=dict(parameters), flow_run_name=name, timeout=0
    )
    return cast(FlowRun, run).id  # the sync variant, called from a sync flow


def wait_for_runs(ids: Mapping[str, UUID], deadline: float) -> dict[str, str]:
    """Wait until every child run is final; past ``deadline`` + grace, cancel the rest.

    ``deadline`` is this process's ``time.monotonic()`` clock. Returns a status per name.
    """
    logger = get_run_logger()
    seen: dict[str, str] = {}
    finished_at: dict[str, float] = {}  # when each run was first seen final (monotonic)
    with get_client(sync_client=True) as client:
        while True:
            runs = {
                r.id: r
                for r in client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids.values())))
                )
            }
            states = {
                n: (runs[i].state_name if i in runs else None) or "Unknown" for n, i in ids.items()
            }
            for name, state_name in states.items():
                if seen.get(name) != state_name:
                    logger.info("experiment %s: %s", name, state_name)
            seen = states
            now = time.monotonic()
            for name, run_id in ids.items():
                if name not in finished_at and run_id in runs and _is_final(runs[run_id]):
                    finished_at[name] = now
            if len(finished_at) == len(ids) or now > deadline + STOP_GRACE_SECONDS:
                break
            time.sleep(POLL_SECONDS)
        final = set(finished_at)
        statuses = {n: child_status(runs[ids[n]], t >= deadline) for n, t in finished_at.items()}
        for name in (n for n in ids if n not in final):
            _cancel(client, ids[name], runs.get(ids[name]))
            statuses[name] = TIMEOUT
    if set(ids) - final:
        logger.error(
            "deadline reached; cancelled unfinished experiments %s", sorted(set(ids) - final)
        )
    return statuses


def _is_final(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final()


def _cancel(client: Any, run_id: UUID, run: FlowRun | None) -> None:
    """Cancel a child: a running one through its worker (which stops the process), one that no
    worker has picked up directly."""
    running = run is not None and run.state is not None and run.state.is_running()
    client.set_flow_run_state(run_id, Cancelling() if running else Cancelled(), force=True)


@flow(name="hjepa-experiments-pool")
def hjepa_experiments_pool(
    overrides: list[dict[str, Any]],
    project_dir: str = ".",
    git_remote: str = "origin",
    timeout_minutes: Annotated[float, Field(gt=0, le=10080)] = 1440.0,
) -> list[dict[str, Any]] | State[Any]:
    """Run each override set as a DVC experiment on the work pool; publish the same summary,
    table and comparison artifacts as ``hjepa-experiments``.

    Args:
        overrides: one dict per experiment, dotted params keys to values, as for
            ``hjepa-experiments``.
        project_dir: this machine's clone; its HEAD is the commit every worker runs from, and it
            must be pushed to ``git_remote``.
        git_remote: the git remote every worker's clone fetches from and pushes experiments to.
        timeout_minutes: the most all experiments of this run may take together. At the deadline
            the children stop their DVC commands, runs no worker picked up are cancelled, they
            get status ``Timeout``, and the flow run fails after publishing its artifacts.

    Returns:
        The table rows: experiment name, status, the overridden params, the metrics.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    try:
        set_args = checked_set_args(root, overrides)
        rev = pushed_head(root, git_remote)
    except UserError as exc:
        return user_error_state(exc)
    deadline = time.monotonic() + timeout_minutes * 60
    wall_deadline = datetime.now(UTC) + timedelta(minutes=timeout_minutes)
    common = {"rev": rev, "deadline": wall_deadline, "git_remote": git_remote}

    run = _this_flow_run()
    prefix = f"{run.name}-{run.id.hex[:6]}"
    names = [f"{prefix}-{i + 1}" for i in range(len(overrides))]

    shared = shared_stages(pipeline_stages(root), overrides)
    if shared:
        logger.info("stages no override touches, run once first: %s", shared)
        name = f"{prefix}-shared"
        params = {**common, "name": name, "set_args": [], "targets": shared}
        status = wait_for_runs({name: submit(name, params)}, deadline)[name]
        if status != "Success":
            logger.error("shared stages %s: %s; each experiment runs them itself", shared, status)

    ids = {}
    for name, args, overrides_i in zip(names, set_args, overrides, strict=True):
        logger.info("experiment %s: %s", name, overrides_i)
        ids[name] = submit(name, {**common, "name": name, "set_args": args})
    statuses = wait_for_runs(ids, deadline)
    return publish(root, names, overrides, statuses, git_remote, run.name, wall_times(ids))


def _this_flow_run() -> FlowRun:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("hjepa-experiments-pool: not called as a Prefect flow")
    return context.flow_run


def publish(
    root: Path,
    names: list[str],
    overrides: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, str],
    git_remote: str,
    run_name: str,
    wall: Mapping[str, float],
) -> list[dict[str, Any]] | State[Any]:
    """Pull the finished experiments' refs, publish the artifacts, fail naming failed ones."""
    logger = get_run_logger()
    succeeded = [n for n in names if statuses.get(n) == "Success"]
    try:
        pull_experiment_refs(root, succeeded, git_remote, logger.info)
    except (UserError, RuntimeError) as exc:  # the table still shows every status
        logger.error("could not pull the experiments' results: %s", exc)
    rows = publish_artifacts(root, run_name, names, overrides, statuses, wall)
    failed = [n for n in names if statuses.get(n) != "Success"]
    if failed:
        detail = ", ".join(f"{n} ({statuses.get(n, 'Unknown')})" for n in failed)
        return failed_run(f"{len(failed)} of {len(names)} experiments failed: {detail}")
    return rows


def wall_times(ids: Mapping[str, UUID]) -> dict[str, float]:
    """Seconds each child flow run ran (Prefect's own ``total_run_time``)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids.values())))
        )
    seconds = {r.id: r.total_run_time.total_seconds() for r in runs}
    return {name: seconds[i] for name, i in ids.items() if i in seconds}
