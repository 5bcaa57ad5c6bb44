"""``hjepa dag check`` proves that each stage's deps cover every project file it imports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run

from hjepa.integration.code_deps import entry_module, imported_files, uncovered
from hjepa.integration.dag import check_code
from hjepa.integration.dvc_repo import pipeline_stages


@pytest.mark.slow
def test_every_stage_of_this_project_covers_its_imports() -> None:
    assert check_code(ROOT, pipeline_stages(ROOT)) == []


def test_entry_module_is_read_from_the_stage_command() -> None:
    assert entry_module("python -m pipeline.probe") == "pipeline.probe"
    assert entry_module("torchrun --nproc_per_node 2 -m pipeline.pretrain") == "pipeline.pretrain"
    assert entry_module("echo hi > a") is None


def test_lazy_imports_inside_functions_are_followed(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "entry.py").write_text("def body():\n    from pkg.lazy import x\n    return x\n")
    (pkg / "lazy.py").write_text("from . import leaf\nx = 1\n")
    (pkg / "leaf.py").write_text("if TYPE_CHECKING:\n    import pkg.typing_only\n")
    (pkg / "typing_only.py").write_text("")
    files = imported_files(tmp_path, {"pkg/entry.py"})
    assert files == {"pkg/entry.py", "pkg/__init__.py", "pkg/lazy.py", "pkg/leaf.py"}
    assert uncovered(files, ("pkg/entry.py", "pkg/__init__.py")) == ["pkg/lazy.py", "pkg/leaf.py"]
    assert uncovered(files, ("pkg",)) == []


@pytest.mark.slow
def test_dag_check_names_a_file_the_deps_no_longer_cover(make_project) -> None:
    project = make_project()
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    spec["stages"]["probe"]["deps"].remove("hjepa/eval")
    (project / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = run(["hjepa", "dag", "check", "--code-only"], project, check=False)
    assert proc.returncode == 2, proc.stdout
    assert "stage 'probe' imports hjepa/eval/stage.py but dvc.yaml does not list it" in proc.stderr
    assert "stage 'prepare'" not in proc.stderr
