"""Where a training step's time goes: torch.profiler over a few steps of a named config.

    python benchmarks/profile_step.py --config vit-s --steps 5

Prints the top ops by self CPU time (or CUDA time on a GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pretrain import CONFIGS, build, train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="vit-s", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    trainer = build(args.config, args.device)
    trainer.batches.set_epoch(0)
    n = len(trainer.batches)
    batches = [trainer.batches[i % n].to(trainer.device) for i in range(args.steps + 2)]
    for i in range(2):  # warm-up
        train_step(trainer, batches[i], i)
    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if trainer.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    with profile(activities=activities) as prof:
        for i, b in enumerate(batches[2:]):
            train_step(trainer, b, i + 2)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
