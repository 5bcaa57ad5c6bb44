"""Run override sets as DVC experiments and publish their params and metrics as artifacts.

Each override set is one ``dvc exp run -S key=value ...``. Every set is validated against the
params schema first, so a typo fails the flow run at once and nothing starts. Experiments run
in isolated temp workspaces (``--temp`` one by one, or DVC's queue with ``jobs`` workers), so the
project's workspace, and with it the scheduled pipeline, is never left on an experiment's params.
Like ``--queue``, ``--temp`` sees only what git or DVC tracks: commit your changes first.

What the run shows: one task run per experiment (named after it) and, inside the same flow run,
one per stage of it, ``"<experiment> · <stage>"``, whose log is that stage's DVC output and whose
state says Ran / Skipped / Restored / Failed (``flows.stage_tasks``). With ``jobs`` > 1 DVC's
queue workers run the experiments in the background; their stage task runs are then created
from each experiment's queue log once the queue is done.

All experiments of one flow run share one deadline (``timeout_minutes``): a stage that hangs, or
a DVC queue worker that never reports its experiment done, cannot hold the flow (or a Prefect
worker) forever. At the deadline the unfinished experiments are stopped and marked ``Timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.dvc_run import DvcCommandError, DvcOutput, check_dvc, start_queue_workers, stream_dvc
from flows.exp_artifacts import MARKDOWN_KEY, SUMMARY_KEY, TABLE_KEY, publish_artifacts
from flows.failure import failed_run, user_error_state
from flows.overrides import checked_set_args
from flows.stage_tasks import StageStream, relay_stages
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import queue_entries

__all__ = ["MARKDOWN_KEY", "SUMMARY_KEY", "TABLE_KEY", "hjepa_experiments"]

DONE = ("Success", "Failed")
TIMEOUT = "Timeout"
STOP_COMMAND_SECONDS = 120.0  # for `dvc queue kill/remove` themselves, should DVC hang there too


@task(name="dvc-exp-run", task_run_name="{name}", cache_policy=NO_CACHE, persist_result=False)
def run_experiment(name: str, set_args: list[str], project_dir: str, timeout: float) -> str:
    """One experiment, run now in a temp workspace; its results become a DVC experiment ref.

    Each stage DVC runs becomes a task run ``"<name> · <stage>"`` with that stage's output.
    Past ``timeout`` seconds DVC and the stage it runs are stopped (``DvcTimeout``)."""
    args = ["exp", "run", "--temp", "--name", name, *set_args]
    with DvcOutput(args, project_dir, timeout) as out:
        stream = StageStream(out, out.finish)
        relay_stages(name, stream)
        code = stream.code if stream.code is not None else out.finish()
        if code != 0:
            raise out.error(code)
    return name


@task(
    name="dvc-exp-queue", task_run_name="queue-{name}", cache_policy=NO_CACHE, persist_result=False
)
def queue_experiment(name: str, set_args: list[str], project_dir: str) -> str:
    """Add one experiment to DVC's queue (it runs when the queue's workers pick it up)."""
    logger = get_run_logger()
    check_dvc(["exp", "run", "--queue", "--name", name, *set_args], project_dir, logger.info)
    return name


@task(name="dvc-queue-run", cache_policy=NO_CACHE, persist_result=False)
def run_queue(
    names: list[str], project_dir: str, jobs: int, timeout: float, poll_seconds: float = 2.0
) -> tuple[dict[str, str], dict[str, float]]:
    """Start ``jobs`` queue workers and wait until every one of ``names`` succeeded or failed.

    Waiting ends after ``timeout`` seconds at the latest: the experiments not done by then are
    killed (running) or removed (queued) and come back as ``Timeout``. Returns the statuses and
    each finished experiment's wall time (from the poll that saw it running to the one that saw
    it done).
    """
    logger = get_run_logger()
    deadline = time.monotonic() + timeout
    start_queue_workers(jobs, project_dir, logger.info)
    seen: dict[str, str] = {}
    started: dict[str, float] = {}
    wall: dict[str, float] = {}
    while True:
        statuses = queue_statuses(project_dir, names)
        now = time.monotonic()
        for name, status in statuses.items():
            if seen.get(name) != status:
                logger.info("experiment %s: %s", name, status)
                started.setdefault(name, now)  # Running, or already done at the first poll
                if status in DONE:
                    wall[name] = now - started[name]
        seen = statuses
        if all(s in DONE for s in statuses.values()):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            statuses = stop_unfinished(statuses, project_dir)
            break
        time.sleep(min(poll_seconds, left))
    succeeded = [n for n, s in statuses.items() if s == "Success"]
    while missing := sorted(set(succeeded) - experiment_refs(project_dir)):
        # The queue says Success before the worker has stored the result as an experiment ref;
        # `dvc exp show` right then would miss its params and metrics.
        left = deadline - time.monotonic()
        if left <= 0:
            logger.warning("results of %s not (yet) stored as DVC experiments", missing)
            break
        time.sleep(min(poll_seconds, left))
    return statuses, wall


def stop_unfinished(statuses: dict[str, str], project_dir: str) -> dict[str, str]:
    """Kill the running and remove the queued experiments of ``statuses``; mark them ``Timeout``.

    A failing ``dvc queue kill/remove`` (the experiment finished meanwhile, or its worker is
    gone) is logged, not raised: the flow must still publish what it has.
    """
    logger = get_run_logger()
    unfinished = [n for n, s in statuses.items() if s not in DONE]
    logger.error("deadline reached; stopping unfinished experiments: %s", unfinished)
    running = [n for n in unfinished if statuses[n] == "Running"]
    waiting = [n for n in unfinished if statuses[n] != "Running"]
    for verb, group in (("kill", running), ("remove", waiting)):
        if not group:
            continue
        try:
            args = ["queue", verb, *group]
            check_dvc(args, project_dir, logger.info, timeout=STOP_COMMAND_SECONDS)
        except DvcCommandError as exc:
            logger.error("could not %s %s: %s", verb, group, exc)
    return {n: TIMEOUT if n in unfinished else s for n, s in statuses.items()}


def experiment_refs(project_dir: str) -> set[str]:
    """Names of the experiments DVC has stored (``dvc exp list --all-commits --name-only``)."""
    lines = check_dvc(["exp", "list", "--all-commits", "--name-only"], project_dir, lambda _: None)
    return {line.strip() for line in lines if line.strip()}


def queue_statuses(project_dir: str, names: list[str]) -> dict[str, str]:
    """Status in DVC's queue (``Queued``/``Running``/``Success``/``Failed``) of each of ``names``.

    A name the queue no longer knows counts as ``Failed`` (removed or lost), so waiting ends.
    """
    entries = queue_entries(project_dir)
    by_name = {e["name"]: e["status"] for e in entries if e.get("name") in names}
    return {n: by_name.get(n, "Failed") for n in names}


def replay_queue_logs(names: list[str], statuses: dict[str, str], project_dir: str) -> None:
    """Stage task runs for experiments DVC's queue ran, from their ``dvc queue logs``."""
    for name in names:
        if statuses[name] == TIMEOUT:
            continue  # killed or never started: its log ends mid-stage or is missing
        _, lines = stream_dvc(["queue", "logs", name], project_dir, lambda _line: None)
        relay_stages(name, StageStream(lines, _exit_code(0 if statuses[name] == "Success" else 1)))


def _exit_code(code: int) -> Callable[[], int]:
    return lambda: code


def run_one_by_one(
    names: list[str],
    set_args: list[list[str]],
    project_dir: str,
    timeout: float,
) -> tuple[dict[str, str], dict[str, float]]:
    """Each experiment as a ``run_experiment`` task run, one after the other, all within
    ``timeout`` seconds; a failure does not stop the next one. Returns statuses and wall times.
    (Across machines, each experiment is a flow run on a work pool instead: flows/pool.py.)"""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    wall: dict[str, float] = {}
    with ThreadPoolTaskRunner[Any](max_workers=1) as runner:
        for name, args in zip(names, set_args, strict=True):
            left = deadline - time.monotonic()
            if left <= 0:
                statuses[name] = TIMEOUT  # never started
                continue
            started = time.monotonic()
            parameters = {"name": name, "set_args": args, "project_dir": project_dir}
            future = runner.submit(run_experiment, {**parameters, "timeout": left})
            future.wait()
            wall[name] = time.monotonic() - started
            if future.state.is_completed():
                statuses[name] = "Success"
            else:
                statuses[name] = TIMEOUT if time.monotonic() >= deadline else "Failed"
    return statuses, wall


def run_queued(
    names: list[str], set_args: list[list[str]], project_dir: str, jobs: int, timeout: float
) -> tuple[dict[str, str], dict[str, float]]:
    """Queue every experiment, run the queue with ``jobs`` workers, then replay their logs."""
    deadline = time.monotonic() + timeout
    for name, args in zip(names, set_args, strict=True):
        queue_experiment.submit(name, args, project_dir).result()
    left = max(deadline - time.monotonic(), 0.0)
    statuses, wall = run_queue.submit(names, project_dir, jobs, left).result()
    replay_queue_logs(names, statuses, project_dir)
    return statuses, wall


@flow(name="hjepa-experiments")
def hjepa_experiments(
    overrides: list[dict[str, Any]],
    project_dir: str = ".",
    jobs: Annotated[int, Field(ge=1, le=64)] = 1,
    timeout_minutes: Annotated[float, Field(gt=0, le=10080)] = 1440.0,
) -> list[dict[str, Any]] | State[Any]:
    """Run each override set as a DVC experiment; publish a summary, a table and a comparison.

    Args:
        overrides: one dict per experiment, dotted params keys to values, e.g.
            ``[{"model.layerscale.use_layerscale": true}, {"train.lr": 0.0005}]``;
            ``{}`` runs the committed params as they are.
        project_dir: the project root (git + DVC repo with ``params.yaml``).
        jobs: 1 runs experiments one by one; N > 1 queues them and runs N DVC queue workers.
        timeout_minutes: the most all experiments of this run may take together (default one
            day, at most a week). At the deadline the running ones are stopped (with their stage
            commands), queued ones are removed, all of them get status ``Timeout``, and the
            flow run fails after publishing its artifacts.

    Returns:
        The table rows: experiment name, status, the overridden params, the metrics. Invalid
        override sets fail the run at once with a one-line message.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    try:
        set_args = checked_set_args(root, overrides)
    except UserError as exc:
        return user_error_state(exc)

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("hjepa_experiments must run as a Prefect flow (no flow run context)")
    run = context.flow_run
    prefix = f"{run.name}-{run.id.hex[:6]}"
    names = [f"{prefix}-{i + 1}" for i in range(len(overrides))]
    for name, overrides_i in zip(names, overrides, strict=True):
        logger.info("experiment %s: %s", name, overrides_i)

    timeout = timeout_minutes * 60
    if jobs == 1:
        statuses, wall = run_one_by_one(names, set_args, str(root), timeout)
    else:
        statuses, wall = run_queued(names, set_args, str(root), jobs, timeout)

    rows = publish_artifacts(root, run.name, names, overrides, statuses, wall)
    failed = [n for n in names if statuses.get(n) != "Success"]
    if failed:
        detail = ", ".join(f"{n} ({statuses.get(n, 'Unknown')})" for n in failed)
        # The artifacts still list every experiment; the stage task runs hold the errors.
        return failed_run(f"{len(failed)} of {len(names)} experiments failed: {detail}")
    return rows
