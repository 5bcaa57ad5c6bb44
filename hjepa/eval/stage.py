"""The probe stage's work: evaluate the pretrained encoder against its baselines and write results.

Three feature sources go through the same ``hjepa.eval.probes.evaluate``: the frozen EMA target
encoder, the same architecture at random init (seeded by ``seed``), and raw pixels (randomly
projected to ``probe.pixel_dims`` when they have more dimensions). The pretrained encoder is only
interesting relative to the other two, so all three land in one JSON.

The pixels' k-NN is also read a second way, on the pixel vectors as they are (cosine, no
standardisation): the usual "pixel k-NN" of the literature. ``evaluate`` standardises every
feature set with the train statistics, which suits encoder features but gives near-constant
border pixels unit variance; on centred glyphs (MNIST, letters) the plain reading is the
stronger baseline by 1–4 points, so a claim to beat raw pixels must hold against both.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hjepa.core.config import Params
from hjepa.core.errors import UserError
from hjepa.core.io import write_json, write_text
from hjepa.core.prepared import SPLITS
from hjepa.eval.features import (
    check_pool_grid,
    encoder_readouts,
    feature_depths,
    pixel_features,
    pixel_projection,
)
from hjepa.eval.probes import (
    EvalResult,
    FeatureSplits,
    ProbeSettings,
    evaluate,
    per_class_accuracy,
    plain_knn_top1,
)

__all__ = [
    "ProbeOutcome",
    "check_encoder_fits_data",
    "confusion_csv",
    "probe_metrics",
    "run_probe",
    "run_probe_from_params",
    "write_outputs",
]


@dataclass(frozen=True)
class ProbeOutcome:
    pretrained: EvalResult
    random_init: EvalResult
    pixels: EvalResult
    class_names: list[str]
    test_labels: np.ndarray
    features: str
    feature_depths: list[int]
    feature_dim: int
    pool_grid: int
    knn_pool_grid: int = 1
    knn_feature_dim: int = 0  # the pretrained k-NN features' dimensions
    cv_folds: int = 0
    pixel_dims: int = 0  # dimensions the pixel baseline was probed on
    pixel_raw_dims: int = 0  # H × W × C: more than pixel_dims when randomly projected
    pixels_plain_knn_top1: float = math.nan  # the pixels' k-NN without standardisation


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_encoder_fits_data(arch: dict[str, Any], images: np.ndarray, encoder_path: Path) -> None:
    """UserError unless the encoder was built for images of this size and channel count (an
    encoder trained on other data would otherwise fail deep inside its patch embedding)."""
    size, chans = int(arch["img_size"]), int(arch["in_chans"])
    _, height, width, channels = images.shape
    if (height, width, channels) != (size, size, chans):
        raise UserError(
            f"{encoder_path} expects {size}x{size} images with {chans} channel(s) (its saved "
            f"architecture: img_size {size}, in_chans {chans}), but the prepared data has "
            f"{height}x{width} images with {channels} channel(s); rerun pretraining on this data "
            "(`dvc repro pretrain`) or prepare data of the encoder's size "
            "(data.image_size, data.channels)"
        )


def run_probe(
    data_root: Path,
    encoder_path: Path,
    settings: ProbeSettings,
    features: str,
    last_k: int,
    batch_size: int,
    pool_grid: int = 1,
    load_split: Callable[[Path, str], tuple[np.ndarray, np.ndarray]] | None = None,
    class_names: Callable[[Path], list[str]] | None = None,
    knn_pool_grid: int = 1,
) -> ProbeOutcome:
    """Evaluate ``encoder_path`` (and its baselines) on the prepared data in ``data_root``.

    Both encoders are read with ``pool_grid`` for the linear probe and ``knn_pool_grid`` for the
    k-NN (one forward pass serves both); raw pixels are one readout for both probes."""
    from hjepa.models.encoder import build_encoder, load_encoder

    if load_split is None or class_names is None:
        from hjepa.core import prepared  # pandas: only needed to read data/prepared

        load_split = load_split or prepared.load_split
        class_names = class_names or prepared.class_names
    if not encoder_path.is_file():
        raise UserError(f"{encoder_path}: encoder file not found (run the pretrain stage first)")
    data = {s: load_split(data_root, s) for s in SPLITS}
    names = list(class_names(data_root))

    encoder = load_encoder(encoder_path)
    arch = dict(encoder.arch)
    check_encoder_fits_data(arch, data["train"][0], encoder_path)
    depths = feature_depths(arch, features, last_k)
    check_pool_grid(pool_grid, encoder.grid_size)
    check_pool_grid(knn_pool_grid, encoder.grid_size, key="probe.knn_pool_grid")
    torch.manual_seed(settings.seed)
    random_encoder = build_encoder(arch)

    device = _device()
    results: dict[str, EvalResult] = {}
    dims = (0, 0)
    raw_dims = int(np.prod(data["train"][0].shape[1:]))
    projection = pixel_projection(raw_dims, settings.pixel_dims, settings.seed)
    grids = [pool_grid] if knn_pool_grid == pool_grid else [pool_grid, knn_pool_grid]

    def read(model: torch.nn.Module, label: str) -> Callable[[np.ndarray, str], list[np.ndarray]]:
        return lambda x, s: encoder_readouts(
            model, x, depths, batch_size, grids, f"{label} {s}", device
        )

    sources: dict[str, Callable[[np.ndarray, str], list[np.ndarray]]] = {
        "pretrained": read(encoder, "pretrained"),
        "random_init": read(random_encoder, "random-init"),
        "pixels": lambda x, s: [pixel_features(x, batch_size, projection, device)],
    }
    pixels_plain = math.nan
    for name, extract in sources.items():
        feats = {s: extract(data[s][0], s) for s in SPLITS}
        readouts = [
            FeatureSplits(
                train_x=feats["train"][i],
                train_y=data["train"][1],
                val_x=feats["val"][i],
                val_y=data["val"][1],
                test_x=feats["test"][i],
                test_y=data["test"][1],
            )
            for i in range(len(feats["train"]))
        ]
        if name == "pretrained":
            dims = (readouts[0].train_x.shape[1], readouts[-1].train_x.shape[1])
        knn = readouts[1] if len(readouts) > 1 else None
        results[name] = evaluate(readouts[0], settings, len(names), device, knn)
        if name == "pixels":
            pixels_plain = plain_knn_top1(readouts[0], settings, len(names), device)
    return ProbeOutcome(
        pretrained=results["pretrained"],
        random_init=results["random_init"],
        pixels=results["pixels"],
        class_names=names,
        test_labels=data["test"][1],
        features=features,
        feature_depths=depths,
        feature_dim=dims[0],
        pool_grid=pool_grid,
        knn_pool_grid=knn_pool_grid,
        knn_feature_dim=dims[1],
        cv_folds=settings.cv_folds,
        pixel_dims=raw_dims if projection is None else int(projection.shape[1]),
        pixel_raw_dims=raw_dims,
        pixels_plain_knn_top1=pixels_plain,
    )


def run_probe_from_params(
    params: Params,
    data_root: Path,
    encoder_path: Path,
    load_split: Callable[[Path, str], tuple[np.ndarray, np.ndarray]] | None = None,
    class_names: Callable[[Path], list[str]] | None = None,
) -> ProbeOutcome:
    """``run_probe`` with every ``probe.*`` leaf and ``seed`` read from ``params`` (what the
    probe stage and the benchmarks run, so a new readout key reaches all of them)."""
    probe = params.probe
    return run_probe(
        data_root,
        encoder_path,
        ProbeSettings.from_params(params),
        probe.features,
        probe.last_k,
        probe.batch_size,
        probe.pool_grid,
        load_split,
        class_names,
        knn_pool_grid=probe.knn_pool_grid,
    )


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def probe_metrics(outcome: ProbeOutcome) -> dict[str, Any]:
    """The ``metrics/probe.json`` document (flat-ish, so ``dvc metrics diff`` reads well)."""
    pre, rnd, pix = outcome.pretrained, outcome.random_init, outcome.pixels
    per_class = per_class_accuracy(pre.linear_pred, outcome.test_labels, outcome.class_names)
    return {
        "linear_top1": _clean(pre.linear_top1),
        "knn_top1": _clean(pre.knn_top1),
        "random_init": {
            "linear_top1": _clean(rnd.linear_top1),
            "knn_top1": _clean(rnd.knn_top1),
            "best_c": rnd.best_c,
        },
        "pixels": {
            "linear_top1": _clean(pix.linear_top1),
            "knn_top1": _clean(pix.knn_top1),
            "best_c": pix.best_c,
            "dims": outcome.pixel_dims,
            "raw_dims": outcome.pixel_raw_dims,
            "projection": (
                "none" if outcome.pixel_dims == outcome.pixel_raw_dims else "gaussian random"
            ),
            "knn_top1_plain": _clean(outcome.pixels_plain_knn_top1),
        },
        "gain_over_random_init": _clean(pre.linear_top1 - rnd.linear_top1),
        "best_c": pre.best_c,
        "c_selection": (
            f"{outcome.cv_folds}-fold CV on train+val" if outcome.cv_folds >= 2 else "val split"
        ),
        "val_top1_by_c": {str(c): _clean(v) for c, v in pre.val_top1.items()},
        "features": outcome.features,
        "feature_depths": outcome.feature_depths,
        "feature_dim": outcome.feature_dim,
        "pool_grid": outcome.pool_grid,
        "knn_pool_grid": outcome.knn_pool_grid,
        "knn_feature_dim": outcome.knn_feature_dim,
        "num_test": int(len(outcome.test_labels)),
        "per_class": {k: _clean(v) for k, v in per_class.items()},
    }


def confusion_csv(outcome: ProbeOutcome) -> str:
    """One row per test image, ``actual,predicted`` as class names (DVC's confusion template)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    names = outcome.class_names
    for actual, pred in zip(outcome.test_labels, outcome.pretrained.linear_pred, strict=True):
        writer.writerow([names[int(actual)], names[int(pred)]])
    return buf.getvalue()


def write_outputs(outcome: ProbeOutcome, metrics_path: Path, confusion_path: Path) -> dict:
    """Write both files atomically; warn loudly when pretraining did not beat random init."""
    metrics = probe_metrics(outcome)
    write_json(metrics_path, metrics)
    write_text(confusion_path, confusion_csv(outcome))
    if outcome.pretrained.linear_top1 <= outcome.random_init.linear_top1:
        print(
            "WARNING: the pretrained encoder does not beat its random init on the linear probe "
            f"({outcome.pretrained.linear_top1:.4f} <= {outcome.random_init.linear_top1:.4f}); "
            "pretraining did not help (more epochs, other masks or LayerScale may).",
            file=sys.stderr,
        )
    return metrics
