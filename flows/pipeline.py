"""The ``dvc.yaml`` DAG as a Prefect flow: one task run per stage, each ``dvc repro -s <stage>``.

Prefect is the control plane (schedule, parameters from the UI, retries, logs); DVC is the build
system. So the tasks never cache results (``NO_CACHE``, no persisted results): whether a stage
reruns is DVC's decision alone, and each task reports it as the name of its final state (Ran,
Skipped, or Restored from DVC's run-cache). The stage list and its order come from DVC's own
graph, so adding a stage to ``dvc.yaml`` adds a task here with no code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import Field

from flows.dvc_run import check_dvc, repro_status
from flows.failure import user_error_state
from flows.stage_tasks import log_dvc_line, stage_state
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import pipeline_stages

StageResult = dict[str, str]


@task(name="dvc-repro", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def repro_stage(stage: str, project_dir: str) -> State[StageResult]:
    """Reproduce one stage (its upstream stages are separate task runs); the final state is
    named after what DVC did (Ran, Skipped, Restored), its result is ``{"stage", "status"}``."""
    logger = get_run_logger()
    lines = check_dvc(
        ["repro", "--single-item", stage], project_dir, lambda line: log_dvc_line(logger, line)
    )
    status = repro_status(stage, lines)
    logger.info("stage '%s': %s", stage, status)
    return stage_state(stage, status)


def repro_task(retries: int, retry_delay_seconds: float) -> Task:
    """``repro_stage`` with the flow's retry policy: ``retries`` retries, each after
    ``retry_delay_seconds`` (one number, so the task page shows it as the Retry Delay)."""
    return repro_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)


def one_worker() -> TaskRunner[Any]:
    """A thread pool of one: typed as the flow decorator's ``TaskRunner`` (Prefect's own
    ``ThreadPoolTaskRunner`` is generic over another future type)."""
    return ThreadPoolTaskRunner(max_workers=1)


# One worker: DVC holds a repo-wide lock while it reproduces, so stages run one at a time; the
# wait_for edges still give the Prefect UI the same graph as `dvc dag`.
@flow(name="hjepa-pipeline", task_runner=one_worker())
def hjepa_pipeline(
    project_dir: str = ".",
    retries: Annotated[int, Field(ge=0, le=50)] = 1,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 5.0,
) -> list[StageResult] | State[Any]:
    """Run every ``dvc.yaml`` stage of ``project_dir`` in dependency order.

    Args:
        project_dir: the project root (holds ``dvc.yaml``); relative paths are resolved against
            the working directory of the process that runs the flow.
        retries: how many times a failed stage is retried before the flow fails.
        retry_delay_seconds: how long to wait before each retry.

    Returns:
        One ``{"stage": name, "status": "ran" | "skipped" | "restored"}`` per stage, in order;
        a project that is not a DVC project (or has no stages) fails the run with one line.
    """
    root = Path(project_dir).resolve()
    try:
        stages = pipeline_stages(root)
        if not stages:
            raise UserError(f"{root / 'dvc.yaml'}: no stages defined; nothing to run")
    except UserError as exc:
        return user_error_state(exc)
    run_stage = repro_task(retries, retry_delay_seconds)
    futures: dict[str, PrefectFuture] = {}
    for node in stages:
        futures[node.name] = run_stage.submit(
            node.name, str(root), wait_for=[futures[up] for up in node.upstream]
        )
    return [futures[node.name].result() for node in stages]
