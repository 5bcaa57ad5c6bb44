"""What every stage entry point shares: params loading, error reporting, the params-read record.

A stage body receives the validated params. The leaf keys it read are written to
``params_read/<stage>.json`` (a cached DVC out, so DVC's run-cache can restore the stage), which
``hjepa dag check`` compares with the stage's ``params:`` in ``dvc.yaml``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from hjepa.core.config import Params, load_params, reads, reset_reads
from hjepa.core.errors import UserError
from hjepa.core.io import write_json

PARAMS_READ_DIR = Path("params_read")


def params_read_path(stage: str) -> Path:
    return PARAMS_READ_DIR / f"{stage}.json"


def run_stage(stage: str, body: Callable[[Params], None]) -> None:
    """Run ``body`` with validated params; exit 2 with a message (no traceback) on user errors."""
    params_file = os.environ.get("HJEPA_PARAMS", "params.yaml")
    try:
        reset_reads()
        params = load_params(params_file)
        body(params)
    except UserError as exc:
        print(f"error in stage '{stage}': {exc}", file=sys.stderr)
        sys.exit(2)
    write_json(params_read_path(stage), {"stage": stage, "params": sorted(reads())})
