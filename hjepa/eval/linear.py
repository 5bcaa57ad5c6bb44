"""Multinomial logistic regression in torch: full-batch L-BFGS on the probe's device.

Why not scikit-learn: its CPU lbfgs solver made model selection (5 folds × 5 C values, refit,
three feature sets) the probe's whole cost, over an hour at 50,000 images (issue 16). This solver
minimises exactly scikit-learn's objective, so ``probe.c_values`` keeps its meaning:

    C · Σ_i CE(x_i W + b, y_i) + ½‖W‖²,  solved in its mean form  mean_i CE + ‖W‖² / (2 C n)

(the bias is not penalised), from zeros or a warm start, until the largest gradient entry of the
mean form is below 1e-4 (scikit-learn's ``tol``) or after ``max_iter`` L-BFGS iterations (strong
Wolfe line search, float32).

Several problems over the same rows are solved as one (``Problems``): problem f fits the rows of
``fit_mask[f]``, standardised with its own ``shift[f]`` and ``scale[f]``. The objective is the sum
of the problems' objectives, which are independent, so its minimum is every problem's minimum; the
rows are read once per iteration for all problems. That is how k-fold cross-validation costs about
one fit per C value (``hjepa.eval.probes.cv_select_c``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GRAD_TOL", "LinearModel", "Problems", "Solution", "fit", "predict_rows"]

GRAD_TOL = 1e-4  # scikit-learn's default ``tol`` (largest gradient entry of the mean objective)
_HISTORY = 10  # L-BFGS memory (scipy's default; a longer one costs Python time on small problems)
_PREDICT_ROWS = 65_536  # rows scored at once by ``LinearModel.predict``


@dataclass(frozen=True)
class Problems:
    """``num_problems`` logistic regressions over the rows of ``x`` (n×D float32, on the device).

    Problem f fits the rows where ``fit_mask[f]`` is 1 (F×n float32), on features
    ``(x - shift[f]) / scale[f]`` (both F×D); its weights live in that standardised space.
    """

    x: torch.Tensor
    y: torch.Tensor
    fit_mask: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    num_classes: int

    @property
    def num_problems(self) -> int:
        return int(self.fit_mask.shape[0])

    @classmethod
    def single(
        cls, x: np.ndarray, y: np.ndarray, num_classes: int, device: torch.device | str = "cpu"
    ) -> Problems:
        """One problem on every row of ``x`` as given (already standardised)."""
        xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
        d = xt.shape[1]
        return cls(
            x=xt,
            y=torch.as_tensor(y, dtype=torch.int64, device=device),
            fit_mask=torch.ones(1, len(xt), device=device),
            shift=torch.zeros(1, d, device=device),
            scale=torch.ones(1, d, device=device),
            num_classes=num_classes,
        )

    @classmethod
    def folds(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        fit_rows: np.ndarray,
        num_classes: int,
        device: torch.device | str = "cpu",
    ) -> Problems:
        """One problem per row of the boolean ``fit_rows`` (F×n), each standardised with the mean
        and std of its own fitted rows (a column constant there keeps scale 1)."""
        xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
        mask = torch.as_tensor(fit_rows, dtype=torch.float32, device=device)
        count = mask.sum(dim=1, keepdim=True)
        mean = (mask @ xt) / count
        var = (mask @ xt.square()) / count - mean.square()
        std = var.clamp_min(0.0).sqrt()
        return cls(
            x=xt,
            y=torch.as_tensor(y, dtype=torch.int64, device=device),
            fit_mask=mask,
            shift=mean,
            scale=torch.where(std < 1e-8, torch.ones_like(std), std),
            num_classes=num_classes,
        )


@dataclass(frozen=True)
class Solution:
    """Weights (F×D×K) and biases (F×K) of every problem, and the L-BFGS iterations spent."""

    weight: torch.Tensor
    bias: torch.Tensor
    iterations: int

    def model(self, problem: int = 0) -> LinearModel:
        return LinearModel(self.weight[problem], self.bias[problem])


@dataclass(frozen=True)
class LinearModel:
    """A fitted probe: class scores ``x @ weight + bias`` on standardised features."""

    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class (int64) of each row of ``x``, scored in bounded chunks."""
        out = np.empty(len(x), dtype=np.int64)
        w, b = self.weight.detach(), self.bias.detach()
        for start in range(0, len(x), _PREDICT_ROWS):
            rows = np.ascontiguousarray(x[start : start + _PREDICT_ROWS], dtype=np.float32)
            scores = torch.as_tensor(rows, device=w.device) @ w + b
            out[start : start + len(rows)] = scores.argmax(dim=1).cpu().numpy()
        return out


def _logits(p: Problems, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(n, F, K) scores of every row under every problem, with one pass over ``p.x``.

    (x - shift) / scale @ W + b is computed as x @ (W / scale) + (b - shift / scale @ W).
    """
    f, d, k = weight.shape
    effective = weight / p.scale[:, :, None]
    offset = bias - torch.einsum("fd,fdk->fk", p.shift / p.scale, weight)
    flat = p.x @ effective.permute(1, 0, 2).reshape(d, f * k)
    return flat.view(-1, f, k) + offset


def predict_rows(p: Problems, solution: Solution) -> torch.Tensor:
    """(n, F) predicted class of every row under every problem (held-out rows included)."""
    with torch.no_grad():
        return _logits(p, solution.weight, solution.bias).argmax(dim=2)


def _objective(p: Problems, weight: torch.Tensor, bias: torch.Tensor, c: float) -> torch.Tensor:
    """Σ_f [ mean CE over problem f's rows + ‖W_f‖² / (2 C n_f) ]."""
    logits = _logits(p, weight, bias)
    ce = torch.logsumexp(logits, dim=2) - logits.gather(
        2, p.y.view(-1, 1, 1).expand(-1, p.num_problems, 1)
    ).squeeze(2)
    counts = p.fit_mask.sum(dim=1)
    mean_ce = (p.fit_mask * ce.T).sum(dim=1) / counts
    penalty = weight.square().sum(dim=(1, 2)) / (2.0 * c * counts)
    return (mean_ce + penalty).sum()


def fit(p: Problems, c: float, max_iter: int, init: Solution | None = None) -> Solution:
    """Minimise every problem's objective at regularisation ``c`` (see the module docstring),
    starting from ``init`` (a warm start: the solution at a nearby C) or from zeros."""
    f, d, k = p.num_problems, p.x.shape[1], p.num_classes
    if init is None:
        weight = torch.zeros(f, d, k, device=p.x.device)
        bias = torch.zeros(f, k, device=p.x.device)
    else:
        weight, bias = init.weight.detach().clone(), init.bias.detach().clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=GRAD_TOL,
        tolerance_change=1e-9,
        history_size=_HISTORY,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _objective(p, weight, bias, c)
        loss.backward()
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    iterations = int(opt.state[weight].get("n_iter", 0))
    return Solution(weight.detach(), bias.detach(), iterations)
