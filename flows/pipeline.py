"""The ``dvc.yaml`` DAG as a Prefect flow: one task run per stage, each ``dvc repro -s <stage>``.

Prefect is the control plane (schedule, parameters from the UI, retries, logs); DVC is the build
system. So the tasks never cache results (``NO_CACHE``, no persisted results): whether a stage
reruns is DVC's decision alone, and each task reports it ("ran", "skipped", or "restored" from
DVC's run-cache). The stage list and its order come from DVC's own graph, so adding a stage to
``dvc.yaml`` adds a task here with no code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import Field

from flows.dvc_run import check_dvc, repro_status
from hjepa.core.errors import UserError
from hjepa.integration.dvc_repo import pipeline_stages

StageResult = dict[str, str]


@task(name="dvc-repro", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def repro_stage(stage: str, project_dir: str) -> StageResult:
    """Reproduce one stage (its upstream stages are separate task runs) and report what DVC did."""
    logger = get_run_logger()
    lines = check_dvc(["repro", "--single-item", stage], project_dir, logger.info)
    status = repro_status(stage, lines)
    logger.info("stage '%s': %s", stage, status)
    return {"stage": stage, "status": status}


def repro_task(retries: int, retry_delay_seconds: float) -> Task:
    """``repro_stage`` with the flow's retry policy: delays ``d, 2d, 4d, ...`` (exponential)."""
    return repro_stage.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(retry_delay_seconds)
    )


# One worker: DVC holds a repo-wide lock while it reproduces, so stages run one at a time; the
# wait_for edges still give the Prefect UI the same graph as `dvc dag`.
@flow(name="hjepa-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=1))
def hjepa_pipeline(
    project_dir: str = ".",
    retries: Annotated[int, Field(ge=0, le=50)] = 1,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 5.0,
) -> list[StageResult]:
    """Run every ``dvc.yaml`` stage of ``project_dir`` in dependency order.

    Args:
        project_dir: the project root (holds ``dvc.yaml``); relative paths are resolved against
            the working directory of the process that runs the flow.
        retries: how many times a failed stage is retried before the flow fails.
        retry_delay_seconds: the first retry's delay; each further retry waits twice as long.

    Returns:
        One ``{"stage": name, "status": "ran" | "skipped" | "restored"}`` per stage, in order.
    """
    root = Path(project_dir).resolve()
    stages = pipeline_stages(root)
    if not stages:
        raise UserError(f"{root / 'dvc.yaml'}: no stages defined; nothing to run")
    run_stage = repro_task(retries, retry_delay_seconds)
    futures: dict[str, PrefectFuture] = {}
    for node in stages:
        futures[node.name] = run_stage.submit(
            node.name, str(root), wait_for=[futures[up] for up in node.upstream]
        )
    return [futures[node.name].result() for node in stages]
