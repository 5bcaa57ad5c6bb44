"""Linear probe, k-NN and the probe stage: accuracy where it must be high, chance where it must
be chance, val-only model selection, and baselines through the same code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, tiny_params

from hjepa.core.config import ConfigError, leaf_keys, parse_params
from hjepa.core.errors import UserError
from hjepa.eval.features import encoder_readouts, feature_depths, pixel_features, pool_tokens
from hjepa.eval.probes import (
    EvalResult,
    FeatureSplits,
    ProbeSettings,
    accuracy,
    evaluate,
    fit_linear,
    knn_predict,
    plain_knn_top1,
    select_c,
    standardise,
)
from hjepa.eval.stage import (
    ProbeOutcome,
    confusion_csv,
    probe_metrics,
    run_probe,
    run_probe_from_params,
    write_outputs,
)
from hjepa.models.encoder import build_encoder, save_encoder

SETTINGS = ProbeSettings(
    c_values=(0.01, 1.0, 100.0), max_iter=300, knn_k=5, knn_temperature=0.07, seed=0
)
ARCH = {
    "img_size": 8,
    "patch_size": 2,
    "in_chans": 1,
    "width": 16,
    "depth": 3,
    "heads": 2,
    "mlp_ratio": 2.0,
    "drop_path": 0.0,
    "pos_embed": "sincos",
    "layerscale_init": None,
    "hierarchy_depths": [1, 3],
}


def _blobs(n: int, classes: int, dim: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    y = rng.integers(0, classes, size=n)
    return (centres[y] + spread * rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int64)


def _splits(shuffle_labels: bool = False) -> FeatureSplits:
    x, y = _blobs(600, 4, 12, seed=1)
    if shuffle_labels:
        y = np.random.default_rng(2).permutation(y)
    return FeatureSplits(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:])


def test_separable_features_reach_full_accuracy():
    result = evaluate(_splits(), SETTINGS, num_classes=4)
    assert result.linear_top1 >= 0.99
    assert result.knn_top1 >= 0.99


def test_shuffled_labels_give_chance():
    result = evaluate(_splits(shuffle_labels=True), SETTINGS, num_classes=4)
    assert result.linear_top1 < 0.45  # chance is 0.25 with 4 classes
    assert result.knn_top1 < 0.45


def test_knn_reads_its_own_features_and_the_linear_probe_its_own():
    """``knn_splits`` feeds the k-NN only: noise there takes the k-NN to chance and leaves the
    linear probe exactly as it was; images that do not match are refused."""
    splits = _splits()
    noise = np.random.default_rng(5).normal(size=(600, 12)).astype(np.float32)
    knn_noise = FeatureSplits(
        noise[:400], splits.train_y, noise[400:500], splits.val_y, noise[500:], splits.test_y
    )
    plain = evaluate(splits, SETTINGS, num_classes=4)
    split_readout = evaluate(splits, SETTINGS, num_classes=4, knn_splits=knn_noise)
    assert plain.knn_top1 >= 0.99 and split_readout.knn_top1 < 0.45
    np.testing.assert_array_equal(plain.linear_pred, split_readout.linear_pred)
    swapped = FeatureSplits(
        noise[:400], splits.train_y[::-1], noise[400:500], splits.val_y, noise[500:], splits.test_y
    )
    with pytest.raises(ValueError, match="same images"):
        evaluate(splits, SETTINGS, num_classes=4, knn_splits=swapped)


def test_c_selection_never_sees_test_labels():
    """Poisoning the test labels changes the test score but not the chosen C or the predictions."""
    # Overlapping classes so that C matters on val.
    x, y = _blobs(600, 4, 12, seed=3, spread=4.0)
    clean = FeatureSplits(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:])
    poisoned = FeatureSplits(
        clean.train_x, clean.train_y, clean.val_x, clean.val_y, clean.test_x, (clean.test_y + 1) % 4
    )
    a = evaluate(clean, SETTINGS, num_classes=4)
    b = evaluate(poisoned, SETTINGS, num_classes=4)
    assert a.best_c == b.best_c
    assert a.val_top1 == b.val_top1
    np.testing.assert_array_equal(a.linear_pred, b.linear_pred)
    assert a.linear_top1 != b.linear_top1  # the test labels really were different


CV = ProbeSettings(
    c_values=(0.01, 1.0, 100.0), max_iter=300, knn_k=5, knn_temperature=0.07, seed=0, cv_folds=3
)


def test_cv_selection_never_sees_test_labels():
    x, y = _blobs(600, 4, 12, seed=3, spread=4.0)
    clean = FeatureSplits(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:])
    poisoned = FeatureSplits(
        *[getattr(clean, f) for f in ("train_x", "train_y", "val_x")],
        clean.val_y,
        clean.test_x,
        (clean.test_y + 1) % 4,
    )
    a, b = evaluate(clean, CV, num_classes=4), evaluate(poisoned, CV, num_classes=4)
    assert a.best_c == b.best_c and a.val_top1 == b.val_top1
    np.testing.assert_array_equal(a.linear_pred, b.linear_pred)


def test_cv_folds_score_held_out_folds_and_refit_on_train_plus_val():
    """The CV scores are mean held-out-fold accuracies, and the final probe is fitted on train
    + val (so val labels shape the predictions, not only the choice of C)."""
    x, y = _blobs(600, 3, 8, seed=5, spread=3.0)
    splits = FeatureSplits(x[:300], y[:300], x[300:500], y[300:500], x[500:], y[500:])
    relabelled = FeatureSplits(
        splits.train_x,
        splits.train_y,
        splits.val_x,
        np.zeros_like(splits.val_y),
        splits.test_x,
        splits.test_y,
    )
    cv_a, cv_b = evaluate(splits, CV, 3), evaluate(relabelled, CV, 3)
    # Val labels all 0 flood train+val with class 0: the refitted probe predicts 0 far more.
    assert (cv_b.linear_pred == 0).mean() > (cv_a.linear_pred == 0).mean() + 0.1
    # By hand: the CV score of C=1 is the mean accuracy over 3 stratified held-out folds.
    from sklearn.model_selection import StratifiedKFold

    lx, ly = np.concatenate([splits.train_x, splits.val_x]), np.concatenate([y[:300], y[300:500]])
    accs = []
    for fit, held in StratifiedKFold(3, shuffle=True, random_state=0).split(lx, ly):
        xa, xb = standardise(lx[fit], lx[held])
        accs.append(accuracy(fit_linear(xa, ly[fit], 1.0, 300).predict(xb), ly[held]))
    assert cv_a.val_top1[1.0] == pytest.approx(np.mean(accs))


def test_cv_folds_larger_than_a_class_is_a_user_error_naming_the_key():
    x, y = _blobs(60, 3, 4, seed=6)
    y[:] = 0
    y[:2] = 1  # class 1 has 2 labelled examples, class 2 none
    splits = FeatureSplits(x[:40], y[:40], x[40:50], y[40:50], x[50:], y[50:])
    with pytest.raises(UserError, match=r"probe.cv_folds is 3 .* only 2 .* probe.cv_folds <= 2"):
        evaluate(splits, CV, 3)


def test_cv_folds_one_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match="cv_folds"):
        parse_params(tiny_params(**{"probe.cv_folds": 1}))


def test_c_selected_on_val_follows_val_labels():
    """The choice is driven by val labels: clean ones pick the C that fits, val labels that are
    all the (train) majority class pick the C so strong that only the prior is left."""
    x, y = _blobs(500, 3, 8, seed=4, spread=0.5)
    y[:60] = 0  # class 0 is the train majority
    tx, ty, vx, vy = x[:400], y[:400], x[400:], y[400:]
    good = select_c(tx, ty, vx, vy, [1e-6, 10.0], max_iter=300)
    assert good.best_c == 10.0 and good.val_top1[10.0] > good.val_top1[1e-6]
    flat = select_c(tx, ty, vx, np.zeros_like(vy), [1e-6, 10.0], max_iter=300)
    assert flat.best_c == 1e-6 and flat.val_top1[1e-6] == 1.0


def test_knn_temperature_weighted_votes():
    bank = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6], [-1.0, 0.0]], dtype=np.float32)
    labels = np.array([1, 0, 0, 2])
    query = np.array([[1.0, 0.0]], dtype=np.float32)  # sims: 1.0 (class 1), 0.8, 0.8 (class 0)
    # Sharp temperature: the single nearest neighbour dominates.
    assert knn_predict(bank, labels, query, k=3, temperature=0.01, num_classes=3)[0] == 1
    # Flat temperature: two votes of class 0 outweigh one of class 1.
    assert knn_predict(bank, labels, query, k=3, temperature=100.0, num_classes=3)[0] == 0
    # k=1: nearest only; k larger than the bank is clamped, not an error.
    assert knn_predict(bank, labels, query, k=1, temperature=100.0, num_classes=3)[0] == 1
    assert knn_predict(bank, labels, -query, k=99, temperature=0.01, num_classes=3)[0] == 2


def test_knn_uses_cosine_not_euclidean():
    bank = np.array([[10.0, 0.0], [0.0, 0.1]], dtype=np.float32)
    query = np.array([[0.1, 0.0]], dtype=np.float32)  # Euclidean-nearest is bank[1]
    assert knn_predict(bank, np.array([0, 1]), query, 1, 0.07, 2)[0] == 0


def test_plain_knn_reads_the_features_as_they_are_where_standardising_would_hurt():
    """One strong class signal and 100 near-constant noise columns (a glyph's border pixels):
    standardising gives the noise unit variance and buries the signal; the plain reading, the
    stricter pixel baseline, keeps it."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    signal = np.where(y == 0, 10.0, -10.0)[:, None] + rng.normal(size=(300, 1))
    x = np.hstack([signal, 0.01 * rng.normal(size=(300, 100))]).astype(np.float32)
    splits = FeatureSplits(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:])
    assert plain_knn_top1(splits, SETTINGS, 2) == 1.0
    assert evaluate(splits, SETTINGS, 2).knn_top1 < 0.8


def test_probe_records_the_plain_pixel_knn_from_the_pixels_themselves(tmp_path, monkeypatch):
    """metrics/probe.json's ``pixels.knn_top1_plain`` is ``plain_knn_top1`` of the pixel
    features, unstandardised, and nothing else's."""
    import hjepa.eval.stage as stage

    seen = []

    def spy(splits, settings, num_classes, device="cpu"):
        seen.append(splits)
        return 0.125

    monkeypatch.setattr(stage, "plain_knn_top1", spy)
    torch.manual_seed(0)
    save_encoder(tmp_path / "enc.pt", build_encoder(ARCH))
    out = run_probe(tmp_path, tmp_path / "enc.pt", SETTINGS, "last", 2, 16, **_fake_kwargs())
    assert probe_metrics(out)["pixels"]["knn_top1_plain"] == 0.125
    (splits,) = seen
    train = _fake_data()["train"][0]
    np.testing.assert_allclose(splits.train_x, pixel_features(train), rtol=1e-6)


def test_standardise_uses_train_statistics():
    train = np.array([[0.0, 5.0], [2.0, 5.0]], dtype=np.float32)
    other = np.array([[4.0, 7.0]], dtype=np.float32)
    tr, ot = standardise(train, other)
    np.testing.assert_allclose(tr.mean(axis=0), [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(ot, [[3.0, 2.0]])  # (4-1)/1; constant column: scale 1


def test_feature_depths_per_mode():
    assert feature_depths(ARCH, "last", 2) == []
    assert feature_depths(ARCH, "hierarchy", 2) == [1, 3]
    assert feature_depths(ARCH, "last_k", 2) == [2, 3]
    with pytest.raises(UserError, match="probe.last_k = 4"):
        feature_depths(ARCH, "last_k", 4)


def test_encoder_readouts_shapes_and_pooling():
    torch.manual_seed(0)
    enc = build_encoder(ARCH)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    last = encoder_readouts(enc, images, [], batch_size=2, pool_grids=[1])[0]
    hier = encoder_readouts(enc, images, [1, 3], batch_size=3, pool_grids=[1])[0]
    assert last.shape == (5, 16) and hier.shape == (5, 32)
    with torch.inference_mode():
        from hjepa.core.transforms import to_model_input

        ref = enc(to_model_input(images), return_blocks=[1]).blocks[1].mean(dim=1).numpy()
    np.testing.assert_allclose(hier[:, :16], ref, atol=1e-5)  # batching does not change results
    assert pixel_features(images).shape == (5, 64)


def test_pool_tokens_keeps_cell_layout():
    # 4x4 grid, 1 channel: token value = its row-major index 0..15.
    tokens = torch.arange(16.0).reshape(1, 16, 1)
    assert pool_tokens(tokens, 1).tolist() == [[7.5]]
    # 2x2 cells: top-left (0,1,4,5), top-right (2,3,6,7), bottom-left, bottom-right.
    assert pool_tokens(tokens, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert pool_tokens(tokens, 4).tolist() == [list(range(16))]  # one token per cell
    two_channels = torch.stack([torch.arange(16.0), -torch.arange(16.0)], dim=-1)[None]
    # Cell-major: both channels of a cell sit next to each other.
    assert pool_tokens(two_channels, 2)[0, :4].tolist() == [2.5, -2.5, 4.5, -4.5]


def test_pool_grid_tells_apart_what_a_global_mean_cannot():
    """Tokens of a left-bright and a right-bright image: the global mean hides the side, the
    2x2 cells show it."""
    left = torch.zeros(1, 16, 1)
    left[0, [0, 1, 4, 5, 8, 9, 12, 13]] = 1.0
    right = torch.flip(left.reshape(1, 4, 4, 1), dims=[2]).reshape(1, 16, 1)
    assert torch.equal(pool_tokens(left, 1), pool_tokens(right, 1))
    assert not torch.equal(pool_tokens(left, 2), pool_tokens(right, 2))


def test_encoder_readouts_pool_grid_dims_and_errors(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(ARCH)  # 8x8 images, patch 2: a 4x4 token grid, width 16
    images = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    grid2, mean = encoder_readouts(enc, images, [], batch_size=2, pool_grids=[2, 1])
    hier2 = encoder_readouts(enc, images, [1, 3], batch_size=2, pool_grids=[2])[0]
    assert grid2.shape == (3, 4 * 16) and hier2.shape == (3, 2 * 4 * 16)
    # The mean of the 4 cell means is the global mean (two readouts of one pass).
    np.testing.assert_allclose(grid2.reshape(3, 4, 16).mean(axis=1), mean, atol=1e-5)
    save_encoder(tmp_path / "enc.pt", enc)
    with pytest.raises(
        UserError, match=r"probe.pool_grid = 5.*4x4 token grid; use a value in 1..4"
    ):
        run_probe(tmp_path, tmp_path / "enc.pt", SETTINGS, "last", 2, 16, 5, **_fake_kwargs())
    out = run_probe(
        tmp_path, tmp_path / "enc.pt", SETTINGS, "hierarchy", 2, 16, 2, **_fake_kwargs()
    )
    assert out.feature_dim == 2 * 4 * 16 and probe_metrics(out)["pool_grid"] == 2
    assert out.knn_feature_dim == 2 * 16  # the k-NN's own readout: the global mean by default


def test_knn_pool_grid_reads_the_knn_its_own_way(tmp_path):
    """``probe.knn_pool_grid`` changes the k-NN's features (both encoders, one forward pass) and
    nothing of the linear probe's; a grid the encoder cannot hold names its key."""
    torch.manual_seed(0)
    save_encoder(tmp_path / "enc.pt", build_encoder(ARCH))  # a 4x4 token grid, width 16
    enc = tmp_path / "enc.pt"
    same = run_probe(tmp_path, enc, SETTINGS, "last", 2, 16, 2, **_fake_kwargs(), knn_pool_grid=2)
    cells = run_probe(tmp_path, enc, SETTINGS, "last", 2, 16, 2, **_fake_kwargs(), knn_pool_grid=1)
    assert (same.knn_feature_dim, cells.knn_feature_dim) == (4 * 16, 16)
    assert probe_metrics(cells)["knn_pool_grid"] == 1 and cells.feature_dim == 4 * 16
    for name in ("pretrained", "random_init"):
        a, b = getattr(same, name), getattr(cells, name)
        np.testing.assert_array_equal(a.linear_pred, b.linear_pred)
        assert a.best_c == b.best_c
    # Left- vs right-bright images: the global mean hides the side the 2x2 cells show.
    for name in ("pretrained", "random_init"):
        assert getattr(same, name).knn_top1 == 1.0 > getattr(cells, name).knn_top1
    with pytest.raises(UserError, match=r"probe.knn_pool_grid = 5.*use a value in 1..4"):
        run_probe(tmp_path, enc, SETTINGS, "last", 2, 16, 2, **_fake_kwargs(), knn_pool_grid=5)


def test_probe_from_params_reads_both_readouts(tmp_path):
    """The stage's and the benchmarks' entry point passes ``probe.pool_grid`` and
    ``probe.knn_pool_grid`` through (a key dropped there would be read but change nothing)."""
    torch.manual_seed(0)
    save_encoder(tmp_path / "enc.pt", build_encoder(ARCH))
    params = parse_params(tiny_params(**{"probe.pool_grid": 4, "probe.knn_pool_grid": 2}))
    out = run_probe_from_params(params, tmp_path, tmp_path / "enc.pt", **_fake_kwargs())
    assert (out.pool_grid, out.knn_pool_grid) == (4, 2)
    assert (out.feature_dim, out.knn_feature_dim) == (16 * 16, 4 * 16)


def _fake_kwargs() -> dict:
    """run_probe keyword arguments that serve _fake_data instead of a prepared directory."""
    data = _fake_data()
    return dict(load_split=lambda root, s: data[s], class_names=lambda root: ["left", "right"])


# ------------------------------------------------------------------------------- stage level
def _fake_data(n_per_class: int = 30):
    """Two visually distinct classes (bright left half vs bright right half) plus noise."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_per_class), ("val", 10), ("test", 10)):
        imgs, labels = [], []
        for cls in (0, 1):
            img = rng.integers(0, 60, size=(n, 8, 8, 1))
            img[:, :, (0 if cls == 0 else 4) : (4 if cls == 0 else 8)] += 180
            imgs.append(img.astype(np.uint8))
            labels.append(np.full(n, cls))
        out[split] = (np.concatenate(imgs), np.concatenate(labels).astype(np.int64))
    return out


def _write_prepared(root: Path) -> None:
    from hjepa.core.prepared import write_prepared

    data = _fake_data()
    manifest = pd.DataFrame({"split": [s for s in data for _ in data[s][1]]})
    write_prepared(root, data, ["left", "right"], manifest)


def test_random_init_baseline_uses_same_architecture_and_seed(tmp_path, monkeypatch):
    import hjepa.models.encoder as enc_mod

    torch.manual_seed(123)
    save_encoder(tmp_path / "enc.pt", build_encoder(ARCH))
    data = _fake_data()
    built: list[dict] = []
    real_build = enc_mod.build_encoder

    def spy(arch):
        built.append(dict(arch))
        return real_build(arch)

    monkeypatch.setattr(enc_mod, "build_encoder", spy)
    kwargs = dict(load_split=lambda root, s: data[s], class_names=lambda root: ["left", "right"])
    out = run_probe(tmp_path, tmp_path / "enc.pt", SETTINGS, "hierarchy", 2, 16, **kwargs)
    assert built == [ARCH]
    assert out.feature_depths == [1, 3] and out.feature_dim == 32
    assert out.pixels.linear_top1 == 1.0  # the two classes differ by which half is bright
    again = run_probe(tmp_path, tmp_path / "enc.pt", SETTINGS, "hierarchy", 2, 16, **kwargs)
    np.testing.assert_array_equal(out.random_init.knn_pred, again.random_init.knn_pred)
    assert out.random_init.linear_top1 == again.random_init.linear_top1


def _result(top1: float, pred: list[int]) -> EvalResult:
    p = np.array(pred)
    return EvalResult(top1, top1, 1.0, {1.0: top1}, p, p)


def test_outputs_and_warning_when_pretraining_does_not_help(tmp_path, capsys):
    outcome = ProbeOutcome(
        pretrained=_result(0.5, [0, 0]),
        random_init=_result(0.75, [0, 1]),
        pixels=_result(1.0, [0, 1]),
        class_names=["a", "b"],
        test_labels=np.array([0, 1]),
        features="last",
        feature_depths=[],
        feature_dim=16,
        pool_grid=1,
    )
    metrics = write_outputs(outcome, tmp_path / "probe.json", tmp_path / "confusion.csv")
    assert (
        "WARNING: the pretrained encoder does not beat its random init" in capsys.readouterr().err
    )
    assert metrics["gain_over_random_init"] == pytest.approx(-0.25)
    assert metrics["per_class"] == {"a": 1.0, "b": 0.0}
    assert json.loads((tmp_path / "probe.json").read_text()) == metrics
    assert confusion_csv(outcome) == "actual,predicted\na,a\nb,a\n"
    assert (tmp_path / "confusion.csv").read_text() == "actual,predicted\na,a\nb,a\n"
    better = ProbeOutcome(**{**outcome.__dict__, "pretrained": _result(1.0, [0, 1])})
    write_outputs(better, tmp_path / "p2.json", tmp_path / "c2.csv")
    assert "WARNING" not in capsys.readouterr().err
    assert probe_metrics(better)["gain_over_random_init"] == pytest.approx(0.25)


def _run_probe_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage entry point, in process (a subprocess would spend seconds re-importing torch)."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delenv("HJEPA_PARAMS", raising=False)
    from pipeline import probe as probe_stage
    from pipeline._stage import run_stage

    run_stage("probe", probe_stage.body)


def test_probe_stage_reads_exactly_probe_params_and_seed(tmp_path, monkeypatch):
    """Runs the probe stage entry point in a scratch directory: outputs exist and the recorded
    reads are every ``probe.*`` leaf plus ``seed`` (what dvc.yaml declares), nothing else."""
    _write_prepared(tmp_path / "data" / "prepared")
    torch.manual_seed(0)
    save_encoder(tmp_path / "models" / "encoder_ema.pt", build_encoder(ARCH))
    raw = tiny_params(**{"probe.features": "last_k", "probe.last_k": 2, "probe.batch_size": 7})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    _run_probe_stage(monkeypatch)
    metrics = json.loads((tmp_path / "metrics" / "probe.json").read_text())
    for key in ("linear_top1", "knn_top1", "gain_over_random_init", "best_c", "per_class"):
        assert key in metrics
    for base in ("random_init", "pixels"):
        assert set(metrics[base]) >= {"linear_top1", "knn_top1"}
    assert metrics["feature_depths"] == [2, 3]
    assert metrics["c_selection"] == "5-fold CV on train+val"  # params.yaml's probe.cv_folds
    assert metrics["pixels"]["linear_top1"] == 1.0
    assert set(metrics["per_class"]) == {"left", "right"}
    rows = (tmp_path / "metrics" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 21
    read = json.loads((tmp_path / "params_read" / "probe.json").read_text())["params"]
    probe_leaves = [k for k in leaf_keys(parse_params(raw)) if k.startswith("probe.")]
    assert sorted(read) == sorted([*probe_leaves, "seed"])


def _stage_error(tmp_path, monkeypatch, capsys) -> str:
    """Run the probe stage in ``tmp_path``; it must exit 2; return what it printed on stderr."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _run_probe_stage(monkeypatch)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_probe_stage_error_names_missing_encoder(tmp_path, monkeypatch, capsys):
    _write_prepared(tmp_path / "data" / "prepared")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    err = _stage_error(tmp_path, monkeypatch, capsys)
    assert "error in stage 'probe'" in err and "models/encoder_ema.pt" in err
    assert not (tmp_path / "metrics" / "probe.json").exists()


@pytest.mark.slow
def test_pixel_dims_caps_the_pixel_baseline_with_a_seeded_projection(tmp_path):
    """probe.pixel_dims: 8x8x1 = 64 pixels are probed as they are under the default 512, through
    a seeded random projection to 16 dims when pixel_dims is 16 (recorded in the metrics)."""
    torch.manual_seed(0)
    save_encoder(tmp_path / "enc.pt", build_encoder(ARCH))
    plain = run_probe(tmp_path, tmp_path / "enc.pt", SETTINGS, "last", 2, 16, **_fake_kwargs())
    pixels = probe_metrics(plain)["pixels"]
    assert (pixels["dims"], pixels["raw_dims"], pixels["projection"]) == (64, 64, "none")
    capped = ProbeSettings(**{**SETTINGS.__dict__, "pixel_dims": 16})
    runs = [
        run_probe(tmp_path, tmp_path / "enc.pt", capped, "last", 2, 16, **_fake_kwargs())
        for _ in range(2)
    ]
    pixels = probe_metrics(runs[0])["pixels"]
    assert (pixels["dims"], pixels["raw_dims"], pixels["projection"]) == (16, 64, "gaussian random")
    np.testing.assert_array_equal(runs[0].pixels.knn_pred, runs[1].pixels.knn_pred)
    assert runs[0].pixels.linear_top1 >= 0.9  # left vs right bright half survives the projection


@pytest.mark.parametrize(("size", "chans"), [(16, 1), (8, 3)])
def test_foreign_encoder_is_a_user_error_naming_both_shapes(
    tmp_path, monkeypatch, capsys, size, chans
):
    """An encoder built for other images (size or channels) is refused before any feature is
    extracted, naming what it expects (from its saved arch) and what the data has."""
    _write_prepared(tmp_path / "data" / "prepared")  # 8x8 images, 1 channel
    save_encoder(
        tmp_path / "models" / "encoder_ema.pt",
        build_encoder({**ARCH, "img_size": size, "in_chans": chans}),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    err = _stage_error(tmp_path, monkeypatch, capsys)
    assert f"expects {size}x{size} images with {chans} channel(s)" in err
    assert f"img_size {size}, in_chans {chans}" in err
    assert "prepared data has 8x8 images with 1 channel(s)" in err
    assert "Traceback" not in err
