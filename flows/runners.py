"""Where the experiments flow's tasks run: threads of this process, or a Dask cluster.

prefect-dask is optional (not in the pinned requirements), so it is imported only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from hjepa.core.errors import UserError

RunnerKind = Literal["thread", "dask"]


def make_task_runner(kind: str, dask_address: str | None = None) -> TaskRunner:
    """A task runner for ``kind``; errors name the parameter and what is allowed.

    ``dask_address`` is the scheduler of an existing Dask cluster (``tcp://host:8786``); with
    ``kind="dask"`` and no address, prefect-dask starts a temporary local cluster.
    """
    if kind == "thread":
        if dask_address:
            raise UserError(
                f"dask_address={dask_address!r} is only used with task_runner='dask'; "
                "remove it or set task_runner='dask'"
            )
        return ThreadPoolTaskRunner()
    if kind == "dask":
        try:
            module = importlib.import_module("prefect_dask")
        except ImportError:
            raise UserError(
                "task_runner='dask' needs the prefect-dask package, which is not installed: "
                "pip install prefect-dask (or use task_runner='thread')"
            ) from None
        return module.DaskTaskRunner(address=dask_address)
    raise UserError(f"task_runner={kind!r}: must be 'thread' or 'dask'")
