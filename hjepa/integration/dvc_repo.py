"""The one place that reads DVC: the pipeline's stages and the experiments, through DVC's own API.

Why DVC's API and not a YAML parse of ``dvc.yaml`` or a ``dvc exp show --json`` subprocess: DVC
resolves templating (``${data.path}``), ``foreach``/``matrix`` stages and nested ``dvc.yaml``
files, and derives the edges from outs → deps; a second reading here would be a second,
diverging copy of the DAG. ``hjepa dag check``, ``hjepa doctor``, ``hjepa compare`` and the
Prefect flows all come through here.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from hjepa.core.errors import UserError

# DVC and Prefect phone home unless told not to; this machine (and many lab machines) is offline.
OFFLINE_ENV: dict[str, str] = {
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def apply_offline_env() -> None:
    """Force the offline variables into this process's environment (before DVC or Prefect load)."""
    os.environ.update(OFFLINE_ENV)


@dataclass(frozen=True)
class Stage:
    """One ``dvc.yaml`` stage as DVC resolved it.

    ``name`` is its address as ``dvc repro`` run in the project root takes it (``name`` or
    ``sub/dvc.yaml:name``); ``upstream`` the nearest pipeline stages it needs; ``params`` the
    leaf or section keys it declares; ``deps``/``outs`` paths relative to the project root
    (metrics and plots are outs).
    """

    name: str
    cmd: str
    upstream: tuple[str, ...]
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]


@contextmanager
def open_repo(project_dir: str | Path) -> Iterator[Any]:
    """DVC's ``Repo`` for ``project_dir``; a project DVC cannot read is a ``UserError``."""
    apply_offline_env()
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(project_dir).resolve()
    try:
        repo = Repo(str(root))
    except DvcException as exc:
        raise UserError(f"{root}: not a DVC project DVC can read ({exc}); run `dvc init`") from None
    try:
        yield repo
    except DvcException as exc:
        raise UserError(f"{root}: DVC failed: {exc}") from None
    finally:
        repo.close()


def pipeline_stages(project_dir: str | Path) -> list[Stage]:
    """All ``dvc.yaml`` stages in dependency order (ties keep their ``dvc.yaml`` order).

    Stages defined by ``.dvc`` files (tracked data) are not returned: they are inputs, not steps,
    but edges that pass through them still order the stages around them.
    """
    from dvc.stage import PipelineStage

    root = Path(project_dir).resolve()
    with open_repo(root) as repo:
        stages = list(repo.index.stages)
        graph = repo.index.graph
        position = {stage: i for i, stage in enumerate(stages)}
        # DVC's edges point from a stage to the stages it depends on; reversed, a topological
        # sort lists producers before consumers.
        ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=position.get)
        return [
            _describe(stage, graph, root) for stage in ordered if isinstance(stage, PipelineStage)
        ]


def _describe(stage: Any, graph: nx.DiGraph, root: Path) -> Stage:
    from dvc.dependency.param import ParamsDependency

    params: list[str] = []
    deps: list[str] = []
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            params.extend(dep.params if isinstance(dep.params, list) else list(dep.params))
        else:
            deps.append(_relative(dep.fs_path, root))
    return Stage(
        name=_address(stage, root),
        cmd=str(stage.cmd),
        upstream=_upstream(graph, stage, root),
        params=tuple(params),
        deps=tuple(deps),
        outs=tuple(_relative(out.fs_path, root) for out in stage.outs),
    )


def _relative(path: str, root: Path) -> str:
    resolved = Path(path).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(path)


def _address(stage: Any, root: Path) -> str:
    """The stage as ``dvc repro`` run in ``root`` names it: ``name``, or ``sub/dvc.yaml:name``.

    (DVC's own ``stage.addressing`` is relative to the process's cwd, not to the project.)
    """
    dvcfile = Path(stage.dvcfile.path).resolve().relative_to(root)
    return stage.name if dvcfile == Path("dvc.yaml") else f"{dvcfile.as_posix()}:{stage.name}"


def _upstream(graph: nx.DiGraph, stage: object, root: Path) -> tuple[str, ...]:
    """The nearest pipeline stages ``stage`` depends on, looking through ``.dvc`` data stages."""
    from dvc.stage import PipelineStage

    found: list[str] = []
    seen: set[object] = set()
    todo = list(graph.successors(stage))
    while todo:
        node = todo.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, PipelineStage):
            found.append(_address(node, root))
        else:
            todo.extend(graph.successors(node))
    return tuple(sorted(found))


def exp_show(project_dir: str | Path) -> list[dict[str, Any]]:
    """What ``dvc exp show --json`` prints, as Python objects: a list of baseline commits, each
    with its ``data`` (params, metrics) and its ``experiments``.
    """
    with open_repo(project_dir) as repo:
        doc = [exp.dumpd() for exp in repo.experiments.show()]
    return _jsonable(doc)


def push_run_cache(project_dir: str | Path) -> tuple[int, int]:
    """``dvc push --run-cache`` to the default remote, plus every output its entries name.

    Why not the command alone: DVC 3.x pushes the run-cache entries but, of the outputs they name,
    only those a revision tracks as cached. An uncached metric (``cache: false``, kept in git) is
    committed to the cache when its stage enters the run-cache, but stays behind on push; another
    machine restoring that stage then misses it ("Missing cache files") and reruns the stage.
    Pushing each entry's outputs just as DVC's restore pulls them closes that gap.

    Returns the number of run-cache entries and of objects sent.
    """
    root = Path(project_dir).resolve()
    # DVC builds the stages of run-cache entries from a path relative to the working directory.
    with contextlib.chdir(root), open_repo(root) as repo:
        entries = repo.stage_cache.push(None)
        sent = 0
        for objs in repo.stage_cache.get_used_objs(entries).values():
            sent += len(repo.cloud.push(objs).transferred)
    return len(entries), sent


def queue_entries(project_dir: str | Path) -> list[dict[str, Any]]:
    """DVC's experiment queue (``dvc queue status``): a dict per entry (``name``, ``status``)."""
    with open_repo(project_dir) as repo:
        return list(repo.experiments.celery_queue.status())


def _jsonable(value: Any) -> Any:
    """Timestamps as ISO strings, as the ``--json`` output has them."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value
