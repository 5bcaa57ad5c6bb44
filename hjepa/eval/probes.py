"""Frozen-feature evaluation: a linear probe and a weighted k-NN, on any feature matrix.

Why it is split this way: the pretrained encoder, its random-init twin and raw pixels all go
through the *same* functions here, so a difference between them is a difference in features, not
in evaluation code. Model selection (``select_c``) receives only train and val arrays, so the test
labels cannot leak into the choice of regularisation strength; ``evaluate`` touches the test
labels only after the choice is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from hjepa.core.config import Params
from hjepa.core.errors import UserError
from hjepa.core.knn import knn_vote, l2_normalise

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
    "select_c",
    "standardise",
]

# Rows of the query matrix scored against the bank at once: bounds memory to CHUNK × bank size.
_KNN_CHUNK = 1024
# Features × samples × classes below which one BLAS thread is faster (see ``fit_linear``).
_SMALL_PROBLEM = 50_000_000


@dataclass(frozen=True)
class ProbeSettings:
    """The evaluation knobs (all ``probe.*`` leaves but the feature choice, plus ``seed``)."""

    c_values: tuple[float, ...]
    max_iter: int
    knn_k: int
    knn_temperature: float
    seed: int
    cv_folds: int = 0  # 0: choose C on val; k >= 2: k-fold CV on train + val, refit on both

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
    """``val_top1``: per C, val accuracy (val selection) or mean held-out-fold accuracy (CV)."""

    best_c: float
    val_top1: dict[float, float]
    model: LogisticRegression


@dataclass(frozen=True)
class EvalResult:
    linear_top1: float
    knn_top1: float
    best_c: float
    val_top1: dict[float, float]
    linear_pred: np.ndarray
    knn_pred: np.ndarray


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


def fit_linear(
    x: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int
) -> LogisticRegression:
    """Multinomial logistic regression (lbfgs). Non-convergence at ``max_iter`` is expected for
    weakly regularised fits and is not an error, so its warning is silenced.

    Small problems run with one BLAS thread: each lbfgs step is a tiny matrix product, and
    multi-threaded BLAS made them ~80x slower on a busy 2-core machine (7 s vs 0.08 s for the
    digits probe), which is the default setting; big problems keep all threads.
    """
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed)
    threads = 1 if x.size * max(len(np.unique(y)), 1) < _SMALL_PROBLEM else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def select_c(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    c_values: Sequence[float],
    max_iter: int,
    seed: int,
) -> CSelection:
    """Pick C by val top-1 (ties → the smaller C, the stronger regulariser).

    Deliberately takes no test data: the signature is the guarantee that selection cannot see it.
    """
    models = {float(c): fit_linear(train_x, train_y, float(c), max_iter, seed) for c in c_values}
    scores = {c: accuracy(m.predict(val_x), val_y) for c, m in models.items()}
    best = _best_c(scores)
    return CSelection(best_c=best, val_top1=dict(sorted(scores.items())), model=models[best])


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
) -> CSelection:
    """Pick C by mean accuracy over ``folds`` stratified folds of raw features ``x`` (each fold
    standardised with its own training part; ties → the smaller C), then refit on all of ``x``
    standardised (``standardise(x, ...)`` prepares other arrays for the returned model).

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
    parts = [standardise(x[fit], x[held]) + [y[fit], y[held]] for fit, held in splitter.split(x, y)]
    scores = {
        c: float(
            np.mean(
                [
                    accuracy(fit_linear(xa, ya, c, max_iter, seed).predict(xb), yb)
                    for xa, xb, ya, yb in parts
                ]
            )
        )
        for c in sorted(float(c) for c in c_values)
    }
    best = _best_c(scores)
    (x_std,) = standardise(x)
    return CSelection(
        best_c=best, val_top1=scores, model=fit_linear(x_std, y, best, max_iter, seed)
    )


def knn_predict(
    bank_x: np.ndarray,
    bank_y: np.ndarray,
    query_x: np.ndarray,
    k: int,
    temperature: float,
    num_classes: int,
) -> np.ndarray:
    """DINO-style weighted k-NN: cosine similarity, the k nearest bank rows vote exp(sim / T).

    ``k`` larger than the bank is clamped to the bank size.
    """
    bank = l2_normalise(bank_x)
    query = l2_normalise(query_x)
    preds = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), _KNN_CHUNK):
        sims = query[start : start + _KNN_CHUNK] @ bank.T
        preds[start : start + len(sims)] = knn_vote(sims, bank_y, k, temperature, num_classes)
    return preds


def evaluate(splits: FeatureSplits, settings: ProbeSettings, num_classes: int) -> EvalResult:
    """Choose C (on val, or by k-fold CV on train + val: ``settings.cv_folds``), then score the
    linear probe and the k-NN (train split as the bank, train statistics) on test."""
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
            settings.seed,
        )
        linear_test_x = test_x
    linear_pred = chosen.model.predict(linear_test_x).astype(np.int64)
    knn_pred = knn_predict(
        train_x, splits.train_y, test_x, settings.knn_k, settings.knn_temperature, num_classes
    )
    return EvalResult(
        linear_top1=accuracy(linear_pred, splits.test_y),
        knn_top1=accuracy(knn_pred, splits.test_y),
        best_c=chosen.best_c,
        val_top1=chosen.val_top1,
        linear_pred=linear_pred,
        knn_pred=knn_pred,
    )
