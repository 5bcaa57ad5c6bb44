"""Stage ``probe``: linear probe + k-NN of the frozen EMA encoder vs random init and raw pixels.

Reads every ``probe.*`` leaf and ``seed`` up front and nothing else: the encoder's architecture
comes from ``models/encoder_ema.pt`` itself, so ``model.*`` is not this stage's dependency.
"""

from __future__ import annotations

from pathlib import Path

from hjepa.core.config import Params
from hjepa.eval.stage import run_probe_from_params, write_outputs
from pipeline._stage import run_stage

DATA_ROOT = Path("data/prepared")
ENCODER = Path("models/encoder_ema.pt")
METRICS = Path("metrics/probe.json")
CONFUSION = Path("metrics/confusion.csv")


def body(params: Params) -> None:
    outcome = run_probe_from_params(params, DATA_ROOT, ENCODER)
    metrics = write_outputs(outcome, METRICS, CONFUSION)
    pixels = metrics["pixels"]
    projected = "" if pixels["dims"] == pixels["raw_dims"] else f" ({pixels['dims']}-d projection)"
    print(
        f"probe: linear {metrics['linear_top1']:.4f} (C={metrics['best_c']}), "
        f"k-NN {metrics['knn_top1']:.4f}; random init linear "
        f"{metrics['random_init']['linear_top1']:.4f} / k-NN "
        f"{metrics['random_init']['knn_top1']:.4f}; pixels linear "
        f"{pixels['linear_top1']:.4f} / k-NN {pixels['knn_top1']:.4f}{projected}"
    )


if __name__ == "__main__":
    run_stage("probe", body)
