"""What every stage entry point shares: params loading, error reporting, the params-read record.

A stage body receives the validated params. The leaf keys it read are written to
``params_read/<stage>.json`` (a cached DVC out, so DVC's run-cache can restore the stage), which
``hjepa dag check`` compares with the stage's ``params:`` in ``dvc.yaml``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hjepa.core.config import Params, load_params, reads, reset_reads
from hjepa.core.errors import UserError
from hjepa.core.io import write_json

PARAMS_READ_DIR = Path("params_read")


def params_read_path(stage: str) -> Path:
    return PARAMS_READ_DIR / f"{stage}.json"


def run_stage(
    stage: str, body: Callable[[Params], None], removed_by_dvc: Sequence[Path] = ()
) -> None:
    """Run ``body`` with validated params; exit 2 with a message (no traceback) on user errors.

    ``removed_by_dvc``: the stage's outs that DVC deletes before running it (outs without
    ``persist``). If the stage fails and they are gone, the message ends with the one command
    that restores the previous ones from DVC's cache.
    """
    params_file = os.environ.get("HJEPA_PARAMS", "params.yaml")
    try:
        reset_reads()
        params = load_params(params_file)
        body(params)
    except UserError as exc:
        print(
            f"error in stage '{stage}': {exc}{_restore_hint(stage, removed_by_dvc)}",
            file=sys.stderr,
        )
        sys.exit(2)
    except BaseException:
        hint = _restore_hint(stage, removed_by_dvc).strip()
        if hint:
            print(hint, file=sys.stderr)
        raise
    write_json(params_read_path(stage), {"stage": stage, "params": sorted(reads())})


def _restore_hint(stage: str, outs: Sequence[Path]) -> str:
    missing = [str(p) for p in outs if not p.exists()]
    if not missing:
        return ""
    return (
        f"\nDVC removed this stage's previous outputs before it ran ({', '.join(missing)}); "
        f"`dvc checkout {stage}` restores them."
    )
