"""``python -m pipeline.prepare``: raw source → ``data/prepared/`` + ``metrics/data.json``.

Thin on purpose: all the work is ``hjepa.data.build.prepare_dataset``.
"""

from __future__ import annotations

from pathlib import Path

from hjepa.core.config import Params
from hjepa.core.prepared import PREPARED_DIR
from hjepa.data.build import prepare_dataset
from pipeline._stage import run_stage

METRICS = Path("metrics/data.json")


def body(params: Params) -> None:
    metrics = prepare_dataset(params, PREPARED_DIR, METRICS)
    counts = ", ".join(f"{k} {v}" for k, v in metrics["counts"].items())
    print(
        f"prepared {metrics['num_images']} {metrics['source']} images ({counts}) → {PREPARED_DIR}"
    )


if __name__ == "__main__":
    run_stage("prepare", body)
