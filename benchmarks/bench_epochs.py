"""Many short epochs with loader workers: wall time and each epoch's data-wait fraction (JSON).

    python benchmarks/bench_epochs.py                 # this checkout
    python benchmarks/bench_epochs.py --repo OTHER    # another checkout of the project, to compare

What it watches: the cost a run pays at epoch boundaries. The trainer reads every epoch through
one loader (hjepa/train/batches.py ``EpochSpan``), so its workers start once; a loader per epoch
restarts them and the step waits for their first batches each epoch. 12 epochs of 16 steps
(1,024 random 16 px images, batch 64, 2 workers, the default model) on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

OVERRIDES = {
    "train.epochs": 12,
    "train.warmup_epochs": 1,
    "train.batch_size": 64,
    "train.num_workers": 2,
    "train.device": "cpu",
    "train.monitor_every": 0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = args.repo.resolve()
    sys.path.insert(0, str(root))
    from hjepa.core.config import apply_overrides, parse_params
    from hjepa.train.trainer import Pretrainer, PretrainPaths

    raw = yaml.safe_load((root / "params.yaml").read_text())
    over = {**OVERRIDES, "train.num_workers": args.workers}
    params = parse_params(apply_overrides(raw, over), "bench_epochs")
    images = np.random.default_rng(0).integers(0, 256, size=(1024, 16, 16, 1), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        trainer = Pretrainer(
            params, PretrainPaths.under(Path(tmp)), lambda m: None, train_images=images
        )
        trainer.run()
        wall = time.perf_counter() - start
        waits = [round(row["data_wait_frac"], 3) for row in trainer.run_log.rows]
    record = {"repo": str(root), "workers": args.workers, "wall_s": round(wall, 1)}
    print(json.dumps({**record, "data_wait_frac": waits}))


if __name__ == "__main__":
    main()
