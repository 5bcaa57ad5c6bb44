"""The GPU check: one JSON line per measurement, for a session that is lent a CUDA device.

1. ``matmul_peak``: a large bf16 (and fp32) matmul, the peak the other lines are judged against;
2. ``vit-b``: ``bench_pretrain --config vit-b`` (224 px, patch 16, bf16 autocast): images/s and
   the fraction of that peak (MFU), data wait; ``stl96`` the same for the README's 96 px recipe;
   ``vit-b compiled`` and ``stl96 compiled`` the same with ``train.compile`` on;
3. ``pretrain_probe``: a real 2-epoch pretraining (``Pretrainer.run``, DataLoader workers,
   pinned memory) on a synthetic set of 20,000 64 px RGB images, then the probe (torch linear
   probe and k-NN on the device) on synthetic splits: wall times and the data-wait fraction.

Run it through ``benchmarks/gpu_check.sh`` (sets up what the device lacks): 150 s of wall time
on an H200 with the compiled checks' ~50 s of compilation, installs included (2026-12-04), plus
a minute or more for the machine to start.
Targets (issue 16): vit-b at >= 40 % of the bf16 peak, data wait under 10 %; README "At scale"
has the results.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, whatever the working directory

import bench_pretrain  # noqa: E402  (beside this file)

from hjepa.core.config import apply_overrides, parse_params  # noqa: E402
from hjepa.eval.stage import run_probe_from_params  # noqa: E402
from hjepa.train.trainer import Pretrainer, PretrainPaths  # noqa: E402

SYNTHETIC = {
    "data.image_size": 64,
    "data.channels": 3,
    "model.patch_size": 8,
    "model.width": 384,
    "model.depth": 6,
    "model.heads": 6,
    "model.predictor.width": 192,
    "model.predictor.depth": 3,
    "model.predictor.heads": 6,
    "model.hierarchy": [
        {"depth": 3, "scale": 2, "weight": 0.5},
        {"depth": 6, "scale": 1, "weight": 1.0},
    ],
    "train.epochs": 2,
    "train.warmup_epochs": 1,
    "train.batch_size": 256,
    "train.num_workers": 8,
    "train.device": "cuda",
    "probe.cv_folds": 0,
}


COMPILED = {"train.compile": True}


def emit(kind: str, **fields: object) -> None:
    print(json.dumps({"check": kind, **fields}), flush=True)


def pretrain_probe(n: int = 20_000) -> None:
    raw = apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), SYNTHETIC)
    params = parse_params(raw, "gpu check")
    rng = np.random.default_rng(0)
    # Class-dependent colour blobs, so the probe has something to find.
    labels = rng.integers(0, 10, size=n)
    base = rng.integers(0, 256, size=(10, 1, 1, 3))
    noise = rng.normal(0, 40, size=(n, 64, 64, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        paths = PretrainPaths.under(Path(tmp))
        start = time.perf_counter()
        trainer = Pretrainer(params, paths, log=lambda m: None, train_images=images)
        metrics = trainer.run()
        pretrain_s = time.perf_counter() - start
        waits = [row["data_wait_frac"] for row in trainer.run_log.rows]
        cut = {"train": slice(0, int(0.8 * n)), "val": slice(int(0.8 * n), int(0.9 * n))}
        cut["test"] = slice(int(0.9 * n), n)
        start = time.perf_counter()
        outcome = run_probe_from_params(
            params,
            Path(tmp),
            paths.encoder,
            load_split=lambda _root, split: (images[cut[split]], labels[cut[split]]),
            class_names=lambda _root: [str(i) for i in range(10)],
        )
        probe_s = time.perf_counter() - start
    emit(
        "pretrain_probe",
        images=n,
        pretrain_s=round(pretrain_s, 1),
        images_per_s=metrics["images_per_s"],
        data_wait_frac=[round(w, 4) for w in waits],
        probe_s=round(probe_s, 1),
        linear_top1=round(outcome.pretrained.linear_top1, 4),
        knn_top1=round(outcome.pretrained.knn_top1, 4),
    )


def matmul() -> None:
    device = torch.device("cuda")
    emit(
        "matmul_peak",
        device=torch.cuda.get_device_name(device),
        torch=torch.__version__,
        bf16_tflops=round(bench_pretrain.matmul_peak(device, torch.bfloat16) / 1e12, 1),
        fp32_tflops=round(bench_pretrain.matmul_peak(device, torch.float32) / 1e12, 1),
    )


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here")
    # A lease is minutes long and cannot be repeated at will: one check that fails still lets
    # the others report, and says what went wrong in its own JSON line.
    checks = {
        "matmul_peak": matmul,
        "vit-b": lambda: emit("vit-b", **bench_pretrain.bench("vit-b", 20, 5, "cuda")),
        "stl96": lambda: emit("stl96", **bench_pretrain.bench("stl96", 20, 5, "cuda")),
        # Eight warm-up steps: the first compiles (~35 s), a few more recompile for new shapes.
        "vit-b compiled": lambda: emit(
            "vit-b compiled", **bench_pretrain.bench("vit-b", 20, 8, "cuda", overrides=COMPILED)
        ),
        "stl96 compiled": lambda: emit(
            "stl96 compiled", **bench_pretrain.bench("stl96", 20, 8, "cuda", overrides=COMPILED)
        ),
        "pretrain_probe": pretrain_probe,
    }
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - reported, then the next check runs
            emit(name, error=f"{type(exc).__name__}: {exc}")
        finally:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
