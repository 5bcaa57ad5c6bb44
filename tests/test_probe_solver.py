"""The probe's torch solver and its bounded-memory paths: the same answers as scikit-learn for
the same C, warm starts and batched CV folds that change the cost but not the result, k-NN
blocks, the pixel baseline's projection, and feature extraction one batch at a time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from hjepa.eval import features as features_mod
from hjepa.eval import probes
from hjepa.eval.features import encoder_readouts, pixel_features, pixel_projection
from hjepa.eval.linear import Problems, fit, predict_rows
from hjepa.eval.probes import fit_linear, knn_predict, select_c, standardise
from hjepa.models.encoder import build_encoder


@pytest.fixture(scope="module")
def digits_pixels():
    """sklearn's digits as 64 raw pixel features, standardised on a fixed train part."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    train_x, test_x = standardise(x[:1200], x[1200:])
    return train_x, y[:1200], test_x, y[1200:]


@pytest.mark.parametrize("c", [0.01, 0.1, 1.0])
def test_linear_probe_agrees_with_sklearn_lbfgs_for_the_same_c(digits_pixels, c):
    """Same objective, same C: accuracy within 0.5 points and (nearly) the same predictions as
    scikit-learn's LogisticRegression(lbfgs), which the probe used before."""
    train_x, train_y, test_x, test_y = digits_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = LogisticRegression(C=c, max_iter=1000).fit(train_x, train_y)
    ours = fit_linear(train_x, train_y, c, max_iter=1000)
    ref_pred, our_pred = reference.predict(test_x), ours.predict(test_x)
    assert abs(np.mean(our_pred == test_y) - np.mean(ref_pred == test_y)) <= 0.005
    assert np.mean(our_pred == ref_pred) >= 0.99
    # The weights themselves: C means what it meant (a C 10x off would move them a lot).
    np.testing.assert_allclose(ours.weight.numpy(), reference.coef_.T, atol=0.05 * c**0.5)


def test_warm_start_reaches_the_same_solution_in_fewer_iterations(digits_pixels):
    train_x, train_y, test_x, _ = digits_pixels
    problem = Problems.single(train_x, train_y, 10)
    strong = fit(problem, 0.1, 1000)
    cold, warm = fit(problem, 1.0, 1000), fit(problem, 1.0, 1000, strong)
    assert warm.iterations < cold.iterations
    same = np.mean(cold.model().predict(test_x) == warm.model().predict(test_x))
    assert same >= 0.99


def test_batched_folds_equal_separate_fits(digits_pixels):
    """Folds solved as one problem (each with its own standardisation) give what fitting each
    fold on its own standardised rows gives."""
    x, y = digits_pixels[0][:600] * 3.0 + 1.0, digits_pixels[1][:600]  # not standardised
    fit_rows = np.ones((3, 600), dtype=bool)
    for fold in range(3):
        fit_rows[fold, fold::3] = False
    batched = fit(Problems.folds(x, y, fit_rows, 10), 0.5, 1000)
    pred = predict_rows(Problems.folds(x, y, fit_rows, 10), batched).numpy()
    for fold in range(3):
        rows, held = fit_rows[fold], ~fit_rows[fold]
        xa, xb = standardise(x[rows], x[held])
        alone = fit_linear(xa, y[rows], 0.5, 1000).predict(xb)
        assert np.mean(alone == pred[held, fold]) >= 0.98


def test_select_c_walks_from_strong_to_weak_regularisation(monkeypatch, digits_pixels):
    train_x, train_y, test_x, test_y = digits_pixels
    seen: list[tuple[float, bool]] = []
    real_fit = probes.fit

    def spy(problem, c, max_iter, init=None):
        seen.append((c, init is not None))
        return real_fit(problem, c, max_iter, init)

    monkeypatch.setattr(probes, "fit", spy)
    chosen = select_c(train_x, train_y, test_x, test_y, [10.0, 0.01, 1.0], max_iter=1000)
    assert seen == [(0.01, False), (1.0, True), (10.0, True)]
    assert chosen.iterations > 0 and set(chosen.val_top1) == {0.01, 1.0, 10.0}


def test_knn_scores_in_bounded_blocks_with_the_same_result(monkeypatch):
    rng = np.random.default_rng(0)
    bank, query = rng.normal(size=(300, 8)), rng.normal(size=(50, 8))
    labels = rng.integers(0, 3, size=300)
    whole = knn_predict(bank, labels, query, 7, 0.1, 3)
    shapes: list[tuple[int, int]] = []
    real_vote = probes.knn_vote

    def spy(sims, *args):
        shapes.append(tuple(sims.shape))
        return real_vote(sims, *args)

    monkeypatch.setattr(probes, "_KNN_BLOCK", 300 * 16)  # 16 query rows per block
    monkeypatch.setattr(probes, "knn_vote", spy)
    blocked = knn_predict(bank, labels, query, 7, 0.1, 3)
    np.testing.assert_array_equal(blocked, whole)
    assert max(r * c for r, c in shapes) <= 300 * 16 and len(shapes) == 4


def test_pixel_projection_caps_dims_and_is_fixed_by_the_seed():
    assert pixel_projection(256, 512, seed=0) is None  # small images: pixels as they are
    a, b = pixel_projection(3072, 512, seed=0), pixel_projection(3072, 512, seed=0)
    assert a is not None and b is not None and a.shape == (3072, 512)
    assert torch.equal(a, b)
    other = pixel_projection(3072, 512, seed=1)
    assert other is not None and not torch.equal(a, other)
    images = np.random.default_rng(0).integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    proj = pixel_projection(192, 16, seed=3)
    projected = pixel_features(images, batch_size=4, projection=proj)
    assert projected.shape == (10, 16)
    np.testing.assert_allclose(projected, pixel_features(images) @ proj.numpy(), atol=1e-4)


def test_feature_extraction_reads_a_memory_mapped_split_one_batch_at_a_time(tmp_path, monkeypatch):
    """No float copy of the whole split: every conversion sees at most ``batch_size`` images."""
    images = np.random.default_rng(0).integers(0, 256, size=(11, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    sizes: list[int] = []
    real = features_mod.to_model_input

    def spy(batch):
        sizes.append(len(batch))
        return real(batch)

    monkeypatch.setattr(features_mod, "to_model_input", spy)
    pixels = pixel_features(mapped, batch_size=4)
    torch.manual_seed(0)
    arch = {
        "img_size": 8,
        "patch_size": 2,
        "in_chans": 1,
        "width": 16,
        "depth": 2,
        "heads": 2,
        "mlp_ratio": 2.0,
        "drop_path": 0.0,
        "pos_embed": "sincos",
        "layerscale_init": None,
        "hierarchy_depths": [2],
    }
    feats = encoder_readouts(build_encoder(arch), mapped, [], batch_size=4, pool_grids=[1])[0]
    assert sizes == [4, 4, 3, 4, 4, 3]
    assert pixels.shape == (11, 64) and feats.shape == (11, 16)
    np.testing.assert_allclose(pixels, real(images).reshape(11, -1).numpy())
