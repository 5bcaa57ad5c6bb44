"""``python -m pipeline.prepare [--workers N]``: raw source → ``data/prepared/`` +
``metrics/data.json``.

Thin on purpose: all the work is ``hjepa.data.build.prepare_dataset``. ``--workers`` (default:
``$HJEPA_PREPARE_WORKERS``, else the usable CPU count) sets the decoding processes; it is not a
DVC param because the output is byte-identical for any worker count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hjepa.core.config import Params
from hjepa.core.prepared import PREPARED_DIR
from hjepa.data.build import prepare_dataset
from pipeline._stage import params_read_path, run_stage

METRICS = Path("metrics/data.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.prepare", description=__doc__)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: $HJEPA_PREPARE_WORKERS, else the usable CPU count)",
    )
    workers = parser.parse_args(argv).workers

    def body(params: Params) -> None:
        metrics = prepare_dataset(params, PREPARED_DIR, METRICS, workers=workers)
        counts = ", ".join(f"{k} {v}" for k, v in metrics["counts"].items())
        print(
            f"prepared {metrics['num_images']} {metrics['source']} images ({counts}) → "
            f"{PREPARED_DIR}"
        )

    # Outs without `persist` in dvc.yaml (prepare stays in the run-cache): DVC deletes them first.
    removed = [PREPARED_DIR, METRICS, params_read_path("prepare")]
    run_stage("prepare", body, removed_by_dvc=removed)


if __name__ == "__main__":
    main()
