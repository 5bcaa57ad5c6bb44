"""Frozen-feature evaluation: a linear probe and a weighted k-NN, on any feature matrix.

Why it is split this way: the pretrained encoder, its random-init twin and raw pixels all go
through the *same* functions here, so a difference between them is a difference in features, not
in evaluation code. Model selection (``select_c``) receives only train and val arrays, so the test
labels cannot leak into the choice of regularisation strength; ``evaluate`` touches the test
labels only after the choice is made.

The linear probe is ``hjepa.eval.linear`` (torch L-BFGS, scikit-learn's objective and C). Every C
path runs from the strongest regularisation to the weakest, each fit warm-started from the one
before; k-fold CV solves all folds of a C value as one batched problem.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold

from hjepa.core.config import Params
from hjepa.core.errors import UserError
from hjepa.core.knn import knn_vote
from hjepa.eval.linear import LinearModel, Problems, Solution, fit, predict_rows

__all__ = [
    "CSelection",
    "cv_select_c",
    "EvalResult",
    "FeatureSplits",
    "ProbeSettings",
    "accuracy",
    "evaluate",
    "fit_linear",
    "knn_predict",
    "per_class_accuracy",
    "plain_knn_top1",
    "select_c",
    "standardise",
]

# Similarities held at once by the k-NN (query rows × bank rows): 2^24 float32 = 64 MiB, so a
# 50,000-image bank is scored ~335 queries at a time and memory does not grow with the data.
_KNN_BLOCK = 2**24
# Rows × features × classes × problems below which one CPU thread is faster: each L-BFGS step is
# a tiny matrix product, and a second thread made the digits probe ~5x slower on this busy 2-core
# machine; big problems keep all threads.
_SMALL_PROBLEM = 50_000_000


@dataclass(frozen=True)
class ProbeSettings:
    """The evaluation knobs (all ``probe.*`` leaves but the encoder feature choice, plus
    ``seed``); ``pixel_dims`` bounds the raw-pixel baseline (``hjepa.eval.features``)."""

    c_values: tuple[float, ...]
    max_iter: int
    knn_k: int
    knn_temperature: float
    seed: int
    cv_folds: int = 0  # 0: choose C on val; k >= 2: k-fold CV on train + val, refit on both
    pixel_dims: int = 512

    @classmethod
    def from_params(cls, params: Params) -> ProbeSettings:
        """Reads every one of these keys (the probe stage declares them all)."""
        probe = params.probe
        return cls(
            c_values=tuple(probe.c_values),
            max_iter=probe.max_iter,
            knn_k=probe.knn_k,
            knn_temperature=probe.knn_temperature,
            seed=params.seed,
            cv_folds=probe.cv_folds,
            pixel_dims=probe.pixel_dims,
        )


@dataclass(frozen=True)
class FeatureSplits:
    """Features and labels of the three splits (features: float N×D, labels: int64 N)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class CSelection:
    """``val_top1``: per C, val accuracy (val selection) or mean held-out-fold accuracy (CV);
    ``iterations``: L-BFGS iterations spent over the whole path and the final fit."""

    best_c: float
    val_top1: dict[float, float]
    model: LinearModel
    iterations: int = 0


@dataclass(frozen=True)
class EvalResult:
    linear_top1: float
    knn_top1: float
    best_c: float
    val_top1: dict[float, float]
    linear_pred: np.ndarray
    knn_pred: np.ndarray
    linear_iterations: int = 0


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every array with the *train* mean and std (constant columns keep scale 1)."""
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True)
    std = np.where(std < 1e-8, 1.0, std)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels))) if len(labels) else 0.0


def per_class_accuracy(
    pred: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy within each true class (classes absent from ``labels`` get NaN → reported null)."""
    out: dict[str, float] = {}
    for idx, name in enumerate(class_names):
        mask = labels == idx
        out[name] = accuracy(pred[mask], labels[mask]) if mask.any() else float("nan")
    return out


def _num_classes(*labels: np.ndarray) -> int:
    return int(max(int(y.max()) for y in labels if len(y))) + 1


@contextmanager
def _cpu_threads(work: int, device: torch.device | str) -> Iterator[None]:
    """One torch thread for a small CPU problem (see ``_SMALL_PROBLEM``), all threads otherwise."""
    if torch.device(device).type != "cpu" or work >= _SMALL_PROBLEM:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_linear(
    x: np.ndarray, y: np.ndarray, c: float, max_iter: int, device: torch.device | str = "cpu"
) -> LinearModel:
    """One multinomial logistic regression at ``c`` from zeros (``hjepa.eval.linear``).
    Stopping at ``max_iter`` before the tolerance is expected for weak regularisation."""
    k = _num_classes(y)
    with _cpu_threads(x.size * k, device):
        return fit(Problems.single(x, y, k, device), float(c), max_iter).model()


def select_c(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    c_values: Sequence[float],
    max_iter: int,
    device: torch.device | str = "cpu",
) -> CSelection:
    """Pick C by val top-1 (ties → the smaller C, the stronger regulariser); C values are fitted
    from the smallest up, each warm-started from the previous solution.

    Deliberately takes no test data: the signature is the guarantee that selection cannot see it.
    """
    k = _num_classes(train_y, val_y)
    problem = Problems.single(train_x, train_y, k, device)
    scores: dict[float, float] = {}
    models: dict[float, LinearModel] = {}
    solution: Solution | None = None
    iterations = 0
    with _cpu_threads(train_x.size * k, device):
        for c in sorted({float(c) for c in c_values}):
            solution = fit(problem, c, max_iter, solution)
            iterations += solution.iterations
            models[c] = solution.model()
            scores[c] = accuracy(models[c].predict(val_x), val_y)
    best = _best_c(scores)
    return CSelection(best_c=best, val_top1=scores, model=models[best], iterations=iterations)


def _best_c(scores: dict[float, float]) -> float:
    """The C with the highest score; ties → the smaller C, the stronger regulariser."""
    return min(scores, key=lambda c: (-scores[c], c))


def cv_select_c(
    x: np.ndarray,
    y: np.ndarray,
    c_values: Sequence[float],
    max_iter: int,
    seed: int,
    folds: int,
    device: torch.device | str = "cpu",
) -> CSelection:
    """Pick C by mean accuracy over ``folds`` stratified folds of raw features ``x`` (each fold
    standardised with its own training part; ties → the smaller C), then refit on all of ``x``
    standardised (``standardise(x, ...)`` prepares other arrays for the returned model).

    All folds of one C are one batched fit (``Problems.folds``), warm-started from the previous
    C; the refit starts from the folds' mean solution at the chosen C.
    UserError when a class has fewer than ``folds`` examples.
    """
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(counts) else 0
    if smallest < folds:
        raise UserError(
            f"probe.cv_folds is {folds} but a class has only {smallest} train + val images; "
            f"use probe.cv_folds <= {smallest} (or 0: choose C on the val split)"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    fit_rows = np.zeros((folds, len(y)), dtype=bool)
    for fold, (rows, _held) in enumerate(splitter.split(x, y)):
        fit_rows[fold, rows] = True
    held = torch.as_tensor(~fit_rows, device=device)
    held_counts = (~fit_rows).sum(axis=1)
    (x_std,) = standardise(x)
    k = _num_classes(y)
    problems = Problems.folds(x_std, y, fit_rows, k, device)
    scores: dict[float, float] = {}
    solutions: dict[float, Solution] = {}
    solution: Solution | None = None
    iterations = 0
    with _cpu_threads(x.size * k * folds, device):
        for c in sorted({float(c) for c in c_values}):
            solution = fit(problems, c, max_iter, solution)
            iterations += solution.iterations
            solutions[c] = solution
            correct = (predict_rows(problems, solution) == problems.y[:, None]).T & held
            scores[c] = float(np.mean(correct.sum(dim=1).cpu().numpy() / held_counts))
        best = _best_c(scores)
        chosen = solutions[best]
        start = Solution(chosen.weight.mean(0, keepdim=True), chosen.bias.mean(0, keepdim=True), 0)
        final = fit(Problems.single(x_std, y, k, device), best, max_iter, start)
    return CSelection(
        best_c=best, val_top1=scores, model=final.model(), iterations=iterations + final.iterations
    )


def knn_predict(
    bank_x: np.ndarray,
    bank_y: np.ndarray,
    query_x: np.ndarray,
    k: int,
    temperature: float,
    num_classes: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """DINO-style weighted k-NN: cosine similarity, the k nearest bank rows vote exp(sim / T).

    ``k`` larger than the bank is clamped to the bank size. Queries are scored in blocks of at
    most ``_KNN_BLOCK`` similarities, so memory stays bounded at any bank size.
    """
    bank = F.normalize(_tensor(bank_x, device), dim=1)
    labels = torch.as_tensor(bank_y, dtype=torch.int64, device=device)
    rows = max(1, _KNN_BLOCK // max(len(bank), 1))
    preds = np.empty(len(query_x), dtype=np.int64)
    for start in range(0, len(query_x), rows):
        query = F.normalize(_tensor(query_x[start : start + rows], device), dim=1)
        votes = knn_vote(query @ bank.T, labels, k, temperature, num_classes)
        preds[start : start + len(query)] = votes.cpu().numpy()
    return preds


def plain_knn_top1(
    splits: FeatureSplits,
    settings: ProbeSettings,
    num_classes: int,
    device: torch.device | str = "cpu",
) -> float:
    """Test top-1 of the same k-NN as ``evaluate`` (train split as the bank, ``knn_k``,
    ``knn_temperature``) on the features as they are, without standardising them: for raw
    pixels the usual pixel k-NN, a second baseline next to the standardised one (stage.py)."""
    pred = knn_predict(
        splits.train_x,
        splits.train_y,
        splits.test_x,
        settings.knn_k,
        settings.knn_temperature,
        num_classes,
        device,
    )
    return accuracy(pred, splits.test_y)


def _tensor(x: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)


def evaluate(
    splits: FeatureSplits,
    settings: ProbeSettings,
    num_classes: int,
    device: torch.device | str = "cpu",
    knn_splits: FeatureSplits | None = None,
) -> EvalResult:
    """Choose C (on val, or by k-fold CV on train + val: ``settings.cv_folds``), then score the
    linear probe and the k-NN (train split as the bank, train statistics) on test.

    ``knn_splits``: the k-NN's own features of the same images (another readout of the same
    encoder, ``probe.knn_pool_grid``); None = the linear probe's."""
    train_x, val_x, test_x = standardise(splits.train_x, splits.val_x, splits.test_x)
    if settings.cv_folds >= 2:
        labelled = np.concatenate([splits.train_x, splits.val_x])
        chosen = cv_select_c(
            labelled,
            np.concatenate([splits.train_y, splits.val_y]),
            settings.c_values,
            settings.max_iter,
            settings.seed,
            settings.cv_folds,
            device,
        )
        _, linear_test_x = standardise(labelled, splits.test_x)
    else:
        chosen = select_c(
            train_x,
            splits.train_y,
            val_x,
            splits.val_y,
            settings.c_values,
            settings.max_iter,
            device,
        )
        linear_test_x = test_x
    linear_pred = chosen.model.predict(linear_test_x)
    if knn_splits is not None:
        if not np.array_equal(knn_splits.train_y, splits.train_y) or not np.array_equal(
            knn_splits.test_y, splits.test_y
        ):
            raise ValueError("knn_splits must hold the same images as splits (labels differ)")
        train_x, test_x = standardise(knn_splits.train_x, knn_splits.test_x)
    knn_pred = knn_predict(
        train_x,
        splits.train_y,
        test_x,
        settings.knn_k,
        settings.knn_temperature,
        num_classes,
        device,
    )
    return EvalResult(
        linear_top1=accuracy(linear_pred, splits.test_y),
        knn_top1=accuracy(knn_pred, splits.test_y),
        best_c=chosen.best_c,
        val_top1=chosen.val_top1,
        linear_pred=linear_pred,
        knn_pred=knn_pred,
        linear_iterations=chosen.iterations,
    )
