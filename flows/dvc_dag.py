"""The pipeline's stages and their order, read from DVC itself (never written down twice).

Why the DVC API and not a YAML parse of ``dvc.yaml``: DVC derives the edges from outs → deps
(including ``foreach``/``matrix`` expansion and nested ``dvc.yaml`` files); re-deriving them here
would be a second, diverging copy of the DAG.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import networkx as nx
from dvc.exceptions import DvcException
from dvc.repo import Repo
from dvc.stage import PipelineStage

from hjepa.errors import UserError


class StageNode(NamedTuple):
    """One ``dvc.yaml`` stage: its DVC address and the stages it directly needs."""

    name: str
    upstream: tuple[str, ...]


def pipeline_stages(project_dir: str | Path) -> list[StageNode]:
    """All ``dvc.yaml`` stages in dependency order (ties keep their ``dvc.yaml`` order).

    Stages defined by ``.dvc`` files (tracked data) are not returned: they are inputs, not steps,
    but edges that pass through them still order the stages around them.
    """
    root = Path(project_dir).resolve()
    try:
        with Repo(str(root)) as repo:
            stages = list(repo.index.stages)
            graph = repo.index.graph
    except DvcException as exc:
        raise UserError(f"{root}: cannot read the DVC pipeline: {exc}") from None

    position = {stage: i for i, stage in enumerate(stages)}
    # DVC's edges point from a stage to the stages it depends on; reverse them so a topological
    # sort lists producers before consumers.
    ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=position.get)
    return [
        StageNode(_address(stage, root), _upstream(graph, stage, root))
        for stage in ordered
        if isinstance(stage, PipelineStage)
    ]


def _address(stage: PipelineStage, root: Path) -> str:
    """The stage as ``dvc repro`` run in ``root`` names it: ``name``, or ``sub/dvc.yaml:name``.

    (DVC's own ``stage.addressing`` is relative to the process's cwd, not to the project.)
    """
    dvcfile = Path(stage.dvcfile.path).resolve().relative_to(root)
    return stage.name if dvcfile == Path("dvc.yaml") else f"{dvcfile.as_posix()}:{stage.name}"


def _upstream(graph: nx.DiGraph, stage: object, root: Path) -> tuple[str, ...]:
    """The nearest pipeline stages ``stage`` depends on, looking through ``.dvc`` data stages."""
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
