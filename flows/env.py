"""Offline settings for this process and for every subprocess the flows start.

Why: the pipeline must run on machines with no network. DVC and Prefect both phone home unless
told not to, and Prefect reads its settings when it is first imported, so these variables are set
by ``flows/__init__.py`` before any flow module imports Prefect.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hjepa.integration.dvc_repo import OFFLINE_ENV, apply_offline_env

__all__ = ["OFFLINE_ENV", "apply_offline_env", "dvc_command", "subprocess_env"]


def subprocess_env() -> dict[str, str]:
    """Environment for ``dvc`` subprocesses: offline, with this interpreter's bin dir first on PATH.

    DVC runs stage commands through a shell (``python -m pipeline.prepare``); putting the running
    interpreter's directory first makes ``python`` there the one that has the project installed,
    even when the flow was started by a Prefect runner with a bare PATH.
    """
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc_command(*args: str) -> list[str]:
    """``dvc <args>`` run by this interpreter, so the pinned DVC is used whatever PATH says."""
    return [sys.executable, "-m", "dvc", *args]
