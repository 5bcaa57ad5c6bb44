"""Probe benchmark: wall time of the probe's evaluation at 5k, 20k and 50k samples.

For each size, times what the probe stage does after feature extraction, for all three feature
sets: the linear probe's model selection (``probe.cv_folds``-fold CV over ``probe.c_values``,
refit) and the weighted k-NN, on synthetic 10-class data: 512-d "encoder" features, 512-d
"random-init" features (a weaker class signal), and 32×32×3 uint8 images whose 3,072 pixels go
through the stage's pixel path (random projection to ``probe.pixel_dims``, timed with it). Splits
follow ``data.split``; every probe setting is read from the params file. One JSON line per size.

    python benchmarks/bench_probe.py                       # 5000, 20000, 50000 samples
    python benchmarks/bench_probe.py --sizes 2000 --json-out probe_bench.jsonl

Target (issue 16): 50,000 samples, all three feature sets, under 5 minutes on the 2-core CPU.
Synthetic data, because the solver's cost depends on the sizes and on how hard the problem is,
not on where the features came from; the class signal is set so that neither probe is perfect.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hjepa.core.config import load_params  # noqa: E402
from hjepa.eval import probes  # noqa: E402
from hjepa.eval.features import pixel_features, pixel_projection  # noqa: E402
from hjepa.eval.probes import FeatureSplits, ProbeSettings, evaluate  # noqa: E402

CLASSES = 10
FEATURE_DIM = 512
IMAGE_SHAPE = (32, 32, 3)


def synthetic_features(n: int, signal: float, rng: np.random.Generator) -> np.ndarray:
    """Class centres ``signal`` apart (per dimension, Gaussian) plus unit Gaussian noise."""
    labels = np.arange(n) % CLASSES
    centres = rng.normal(size=(CLASSES, FEATURE_DIM)).astype(np.float32) * signal
    noise = rng.standard_normal(size=(n, FEATURE_DIM), dtype=np.float32)
    return centres[labels] + noise


def synthetic_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images: a fixed random template per class, faint under uniform noise."""
    labels = np.arange(n) % CLASSES
    templates = rng.integers(0, 16, size=(CLASSES, *IMAGE_SHAPE), dtype=np.uint8)
    noise = rng.integers(0, 240, size=(n, *IMAGE_SHAPE), dtype=np.uint8)
    return noise + templates[labels]


def split(x: np.ndarray, y: np.ndarray, fractions: tuple[float, float]) -> FeatureSplits:
    n_train, n_val = int(fractions[0] * len(y)), int(fractions[1] * len(y))
    a, b = n_train, n_train + n_val
    return FeatureSplits(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


class Stopwatch:
    """Accumulated wall time of the calls made through ``wrap``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run_size(n: int, settings: ProbeSettings, fractions: tuple[float, float], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % CLASSES).astype(np.int64)
    order = rng.permutation(n)
    y = y[order]
    # The stage's device choice: CUDA when there is one.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row: dict[str, Any] = {"samples": n, "feature_dim": FEATURE_DIM, "classes": CLASSES}
    total = time.perf_counter()
    sets: dict[str, Callable[[], np.ndarray]] = {
        "pretrained": lambda: synthetic_features(n, 0.12, rng)[order],
        "random_init": lambda: synthetic_features(n, 0.07, rng)[order],
        "pixels": lambda: synthetic_images(n, rng)[order],
    }
    knn_clock = Stopwatch()
    real_knn = probes.knn_predict
    probes.knn_predict = knn_clock.wrap(real_knn)  # to split the time between the two probes
    try:
        for name, make in sets.items():
            data = make()
            start = time.perf_counter()
            if name == "pixels":
                raw = int(np.prod(IMAGE_SHAPE))
                proj = pixel_projection(raw, settings.pixel_dims, settings.seed)
                data = pixel_features(data, 256, proj, device)
                row["pixel_dims"] = [raw, data.shape[1]]
            projected = time.perf_counter() - start
            knn_before = knn_clock.seconds
            result = evaluate(split(data, y, fractions), settings, CLASSES, device)
            seconds = time.perf_counter() - start
            row[name] = {
                "seconds": round(seconds, 2),
                "knn_s": round(knn_clock.seconds - knn_before, 2),
                "pixel_projection_s": round(projected, 2) if name == "pixels" else None,
                "lbfgs_iterations": result.linear_iterations,
                "best_c": result.best_c,
                "linear_top1": round(result.linear_top1, 4),
                "knn_top1": round(result.knn_top1, 4),
            }
    finally:
        probes.knn_predict = real_knn
    row["total_s"] = round(time.perf_counter() - total, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file")
    parser.add_argument("--json-out", help="append the JSON lines to this file too")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    settings = ProbeSettings.from_params(params)
    fractions = (params.data.split.train, params.data.split.val)
    run_size(500, settings, fractions, params.seed)  # warm-up: torch's one-time start-up costs
    for n in args.sizes:
        row = run_size(n, settings, fractions, params.seed)
        row.update(
            c_values=list(settings.c_values),
            cv_folds=settings.cv_folds,
            max_iter=settings.max_iter,
            device="cuda" if torch.cuda.is_available() else "cpu",
            threads=torch.get_num_threads(),
            machine=platform.processor() or platform.machine(),
            torch=torch.__version__,
        )
        line = json.dumps(row, sort_keys=True)
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
