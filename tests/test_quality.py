"""Issue 9 levers and diagnostics: VICReg on pooled context embeddings, the per-epoch
representation diagnostics (effective rank, position share, online k-NN) and the quality
benchmark's plumbing. Each test fails if its feature were removed or ignored."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import bench_pretrain  # noqa: E402
import bench_quality  # noqa: E402
import numpy as np
import pytest
import torch
from conftest import stage_dir, tiny_params
from test_docs import OVERRIDE

from hjepa.core.config import parse_assignments, parse_params
from hjepa.models.hjepa import HJEPA
from hjepa.models.regularizers import pooled_embedding, vicreg
from hjepa.train.diagnostics import (
    effective_rank,
    encoder_diagnostics,
    loo_knn_accuracy,
    position_share,
)
from hjepa.train.masks import MaskGenerator
from hjepa.train.trainer import Pretrainer, PretrainPaths


# ----------------------------------------------------------------------------- regulariser
def test_vicreg_penalises_collapse_and_correlation_not_a_whitened_batch():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(4096, 8, generator=g)
    collapsed = torch.ones(64, 8)
    correlated = white[:, :1].repeat(1, 8)  # unit variance, but every channel is the same
    assert float(vicreg(white)) < 0.05
    assert float(vicreg(collapsed)) > 0.95  # variance hinge: std 0 everywhere
    assert float(vicreg(correlated)) > 5.0  # covariance term: 8·7 off-diagonal ones / 8


def test_vicreg_gradient_spreads_a_collapsed_batch():
    emb = (torch.ones(32, 4) + 1e-3 * torch.randn(32, 4)).requires_grad_(True)
    vicreg(emb).backward()
    step = emb - 10.0 * emb.grad
    assert float(step.detach().std(0).mean()) > float(emb.detach().std(0).mean())


def test_pooled_embedding_ignores_padding():
    tokens = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    pad = torch.tensor([[False, False, True]])
    assert torch.equal(pooled_embedding(tokens, pad), torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(pooled_embedding(tokens, None), torch.tensor([[104 / 3, 104 / 3]]))


def _forward(weight: float) -> tuple[HJEPA, torch.Tensor, object, object]:
    params = parse_params(
        tiny_params(**{"model.vicreg_weight": weight, "model.invariance_weight": 0.0})
    )
    torch.manual_seed(0)
    model = HJEPA.from_params(params.model, params.data).train()
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    masks = MaskGenerator.from_params(params.mask, params.grid_size).sample(
        8, torch.Generator().manual_seed(2)
    )
    torch.manual_seed(3)
    return model, images, masks, model(images, masks)


def test_vicreg_weight_adds_exactly_its_weighted_term_to_the_loss():
    _, _, _, plain = _forward(0.0)
    model, images, masks, reg = _forward(0.5)
    assert plain.reg_loss is None
    context = model.context_encoder(
        images, keep_idx=masks.context_idx, pad_mask=masks.context_pad
    ).tokens
    expected = float(0.5 * vicreg(pooled_embedding(context, masks.context_pad)).detach())
    assert reg.reg_loss is not None and float(reg.reg_loss) > 0
    assert math.isclose(float((reg.loss - plain.loss).detach()), expected, rel_tol=1e-4)
    assert math.isclose(float(reg.reg_loss), expected, rel_tol=1e-4)


# ----------------------------------------------------------------------------- diagnostics
def test_effective_rank_counts_directions():
    g = torch.Generator().manual_seed(0)
    rank1 = torch.randn(200, 1, generator=g) * torch.randn(1, 16, generator=g)
    iso = torch.randn(2000, 16, generator=g)
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-3)
    assert 14.0 < effective_rank(iso) <= 16.0
    assert effective_rank(torch.ones(10, 4)) == 0.0


def test_position_share_separates_where_from_what():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 10, 8, generator=g).expand(32, 10, 8)
    content = torch.randn(32, 1, 8, generator=g).expand(32, 10, 8)
    assert position_share(pos + 1e-3 * torch.randn(32, 10, 8, generator=g)) > 0.99
    assert position_share(content) < 1e-6


def test_loo_knn_is_perfect_on_separated_clusters_and_excludes_self():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.normal(size=(3, 5)) * 10
    feats = centres[labels] + rng.normal(size=(60, 5)) * 0.1
    assert loo_knn_accuracy(feats, labels, k=5) == 1.0
    # Each point alone in its class: with itself excluded, no neighbour can vote for it.
    assert loo_knn_accuracy(rng.normal(size=(6, 5)), np.arange(6), k=3) == 0.0


def test_encoder_diagnostics_reports_knn_only_with_labels():
    params = parse_params(tiny_params())
    torch.manual_seed(0)
    enc = HJEPA.from_params(params.model, params.data).target_encoder
    images = torch.rand(16, 1, 8, 8)
    assert set(encoder_diagnostics(enc, images)) == {"effective_rank", "position_share"}
    out = encoder_diagnostics(enc, images, np.arange(16) % 2)
    assert 0.0 <= out["knn_monitor"] <= 1.0


def _paths(d: Path) -> PretrainPaths:
    return PretrainPaths.under(d)


def _rows(d: Path) -> list[dict[str, str]]:
    with open(d / "metrics" / "pretrain_log.tsv") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.slow
@pytest.mark.parametrize("monitor_every", [0, 2])
def test_monitor_every_controls_the_online_knn(tmp_path, prepared_digits, monitor_every):
    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(tiny_params(**{"train.epochs": 3, "train.monitor_every": monitor_every}))
    metrics = Pretrainer(params, _paths(d), log=lambda m: None).run()
    rows = _rows(d)
    assert metrics["effective_rank"] > 0 and 0 <= metrics["position_share"] <= 1
    for row in rows:
        assert float(row["effective_rank"]) > 0 and 0 <= float(row["position_share"]) <= 1
        assert float(row["reg_loss"]) > 0  # params.yaml's default VICReg weight is on
    if monitor_every == 0:
        assert "knn_monitor" not in rows[0]
    else:
        # epochs 2 (every 2nd) and 3 (the last) are measured, epoch 1 is not
        assert [r["knn_monitor"] != "" for r in rows] == [False, True, True]
        assert 0.0 <= float(rows[-1]["knn_monitor"]) <= 1.0


# ------------------------------------------------------------------------------- benchmark
def test_bench_parse_set_and_build_params(tmp_path):
    overrides = parse_assignments(["model.vicreg_weight=0.5", "mask.target_scale=[0.1,0.2]"])
    assert overrides == {"model.vicreg_weight": 0.5, "mask.target_scale": [0.1, 0.2]}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(tiny_params()))
    p = bench_quality.build_params(params_file, overrides, 7, "image_folder", str(tmp_path))
    assert (p.seed, p.model.vicreg_weight, p.data.source) == (7, 0.5, "image_folder")
    assert p.data.path == str(tmp_path.resolve())
    with pytest.raises(Exception, match="key=value"):
        parse_assignments(["no-equals-sign"])


def test_bench_rejects_a_bad_override_before_training(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(tiny_params()))
    code = bench_quality.main(["--params", str(params_file), "--set", "model.vicreg_weigth=1"])
    assert code == 2
    assert "vicreg_weigth" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_end_to_end_two_seeds(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(tiny_params(**{"train.epochs": 1, "train.warmup_epochs": 0})))
    out = tmp_path / "rows.jsonl"
    code = bench_quality.main(
        ["--params", str(params_file), "--seeds", "2", "--name", "t", "--json-out", str(out)]
    )
    assert code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    rows, summary = lines[:2], lines[2]
    assert [r["seed"] for r in rows] == [0, 1] and summary["summary"] is True
    # Seeds differ in split and init, so the pretrained results (and the spread) differ.
    assert rows[0]["pretrained_knn"] != rows[1]["pretrained_knn"] or (
        rows[0]["random_init_linear"] != rows[1]["random_init_linear"]
    )
    mean = (rows[0]["pixels_linear"] + rows[1]["pixels_linear"]) / 2
    assert summary["pixels_linear_mean"] == pytest.approx(mean)
    table = capsys.readouterr().out
    assert "pretrained EMA" in table and "random init" in table and "raw pixels" in table


@pytest.mark.slow
def test_bench_keep_then_probe_sweep_reprobes_the_same_encoders(tmp_path, capsys):
    import probe_sweep

    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(tiny_params(**{"train.epochs": 1, "train.warmup_epochs": 0})))
    keep = tmp_path / "kept"
    assert (
        bench_quality.main(["--params", str(params_file), "--seeds", "2", "--keep", str(keep)]) == 0
    )
    assert sorted(p.name for p in keep.iterdir()) == ["seed0", "seed1"]
    assert (keep / "seed1/models/encoder_ema.pt").is_file()
    first = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]

    out = tmp_path / "sweep.jsonl"
    code = probe_sweep.main(
        [
            "--keep", str(keep), "--params", str(params_file), "--json-out", str(out),
            "--variant", "same:", "--variant", "grid2:probe.pool_grid=2,probe.features=hierarchy",
        ]
    )  # fmt: skip
    assert code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    same, grid2 = lines[:3], lines[3:]
    # Re-probing with unchanged params reproduces bench_quality's own numbers, seed by seed.
    for a, b in zip(first[:2], same[:2], strict=True):
        assert (a["seed"], a["pretrained_linear"], a["pretrained_knn"]) == (
            b["seed"],
            b["pretrained_linear"],
            b["pretrained_knn"],
        )
    width = tiny_params()["model"]["width"]
    assert same[2]["feature_dim"] == width
    assert grid2[0]["overrides"] == {"probe.pool_grid": 2, "probe.features": "hierarchy"}
    assert grid2[2]["feature_dim"] == 2 * 4 * width  # two levels x 2x2 cells


def test_probe_sweep_refuses_non_probe_keys_and_missing_runs(tmp_path, capsys):
    import probe_sweep

    with pytest.raises(Exception, match="probe.<key>=<value>"):
        probe_sweep.parse_variant("x:model.width=8")
    assert probe_sweep.parse_variant("g:probe.c_values=[1,10],probe.pool_grid=2") == (
        "g",
        {"probe.c_values": [1, 10], "probe.pool_grid": 2},
    )
    assert probe_sweep.main(["--keep", str(tmp_path), "--variant", "a:"]) == 2
    assert "no seed<N>/models/encoder_ema.pt" in capsys.readouterr().err


# ------------------------------------------------------------------- two-view invariance
def _invariance_model(weight: float) -> tuple[HJEPA, torch.Tensor, torch.Tensor, object]:
    params = parse_params(tiny_params(**{"model.invariance_weight": weight}))
    torch.manual_seed(0)
    model = HJEPA.from_params(params.model, params.data).train()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(8, 1, 8, 8, generator=g)
    view = torch.rand(8, 1, 8, 8, generator=g)
    masks = MaskGenerator.from_params(params.mask, params.grid_size).sample(
        8, torch.Generator().manual_seed(2)
    )
    return model, images, view, masks


def test_invariance_weight_adds_its_weighted_view_prediction_loss():
    model, images, view, masks = _invariance_model(0.5)
    assert model.invariance_head is not None and model.needs_second_view
    torch.manual_seed(3)
    out = model(images, masks, view)
    # By hand: the head on the pooled context vs the layer-normed pooled target of the view.
    context = model.context_encoder(
        images, keep_idx=masks.context_idx, pad_mask=masks.context_pad
    ).tokens
    pooled = model.target_encoder(view).tokens.mean(dim=1)
    target = torch.nn.functional.layer_norm(pooled, (pooled.shape[-1],))
    pred = model.invariance_head(pooled_embedding(context, masks.context_pad))
    expected = torch.nn.functional.smooth_l1_loss(pred, target)
    assert out.inv_loss is not None
    assert math.isclose(float(out.inv_loss), float(expected.detach()), rel_tol=1e-4)
    # The view matters: another second view gives another loss.
    torch.manual_seed(3)
    other = model(images, masks, images)
    assert not math.isclose(float(other.loss.detach()), float(out.loss.detach()), rel_tol=1e-6)
    # The rest of the loss is what the same model computes without the term.
    model.invariance_weight = 0.0
    torch.manual_seed(3)
    rest = model(images, masks, view)
    gap = float((out.loss - rest.loss).detach())
    assert math.isclose(gap, 0.5 * float(expected.detach()), rel_tol=1e-4)


def test_invariance_off_builds_no_head_and_ignores_a_second_view():
    model, images, view, masks = _invariance_model(0.0)
    assert model.invariance_head is None and not model.needs_second_view
    torch.manual_seed(3)
    a = model(images, masks)
    torch.manual_seed(3)
    b = model(images, masks, view)
    assert a.inv_loss is None and torch.equal(a.loss, b.loss)


def test_invariance_on_without_a_second_view_is_an_error():
    model, images, _, masks = _invariance_model(1.0)
    with pytest.raises(ValueError, match="invariance_weight"):
        model(images, masks)


def test_invariance_gradient_reaches_head_and_context_encoder_not_target():
    model, images, view, masks = _invariance_model(1.0)
    model(images, masks, view).loss.backward()
    assert model.invariance_head is not None
    head_grad = sum(float(p.grad.abs().sum()) for p in model.invariance_head.parameters())
    assert head_grad > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_two_views_add_a_second_draw_without_changing_the_first():
    from hjepa.train.augment import Augmenter
    from hjepa.train.batches import PretrainBatches

    params = parse_params(tiny_params())
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)

    def batches(two: bool) -> PretrainBatches:
        return PretrainBatches(
            images,
            batch_size=16,
            seed=0,
            masks=MaskGenerator.from_params(params.mask, params.grid_size),
            augment=Augmenter.from_params(params.train.augment),
            two_views=two,
        )

    one, two = batches(False)[1], batches(True)[1]
    assert one.second_view is None and two.second_view is not None
    assert torch.equal(one.images, two.images)
    assert torch.equal(one.masks.context_idx, two.masks.context_idx)
    assert two.second_view.shape == two.images.shape
    assert not torch.allclose(two.second_view, two.images)  # an independent crop of each image
    # ... of the same images: both views are crops of one picture, so they correlate strongly.
    a, b = two.images.flatten(1), two.second_view.flatten(1)
    same = torch.nn.functional.cosine_similarity(a, b).mean()
    shuffled = torch.nn.functional.cosine_similarity(a, b.roll(1, 0)).mean()
    assert same > shuffled


@pytest.mark.slow
def test_pretraining_with_invariance_trains_the_head_and_logs_the_term(tmp_path, prepared_digits):
    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(tiny_params(**{"train.epochs": 2, "model.invariance_weight": 1.0}))
    trainer = Pretrainer(params, _paths(d), log=lambda m: None)
    assert trainer.model.invariance_head is not None
    before = [p.detach().clone() for p in trainer.model.invariance_head.parameters()]
    trainer.run()
    after = list(trainer.model.invariance_head.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    rows = _rows(d)
    assert all(float(r["inv_loss"]) > 0 for r in rows)


@pytest.mark.slow
def test_step_benchmark_runs_the_default_recipe() -> None:
    """bench_pretrain (and profile_step, which shares its step) on params.yaml as it is: the
    step must get the second view the default invariance term needs, or it raises."""
    row = bench_pretrain.bench("default", steps=1, warmup=0, device="cpu")
    assert row["config"] == "default" and row["images_per_s"] > 0
    assert math.isfinite(row["final_loss"]) and row["gflops_per_image"] > 0


def test_step_benchmark_times_the_letters_recipe_as_the_readme_writes_it() -> None:
    """The "letters" config is the training side (model and augmentation keys) of the README's
    letters recipe: the step time quoted for the recipe cannot drift from the recipe."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = readme.splitlines()
    row = next(line for line in rows if line.startswith("| glyphs at 28 px that vary"))
    written = {
        key: float(value)
        for _flag, key, value in OVERRIDE.findall(row)
        if key.startswith(("model.", "train.augment."))
    }
    assert written and bench_pretrain.CONFIGS["letters"] == written
    model = bench_pretrain.build("letters", "cpu").model
    assert model.context_encoder.vit.blocks[0].mlp.fc1.out_features == 2 * 128


def test_step_benchmark_rounds_rates_to_significant_figures() -> None:
    """Fixed decimals turned 1.34 GFLOP/s (bf16 emulated on a CPU without AVX-512) into 1.3 and
    made the quoted fraction of peak disagree with its own inputs by 3 %."""
    assert bench_pretrain.significant(1.3449) == 1.34
    assert bench_pretrain.significant(0.0012345) == 0.00123
    assert bench_pretrain.significant(98765.4) == 98800.0


@pytest.mark.slow
def test_step_benchmark_bf16_autocasts_on_the_cpu(monkeypatch) -> None:
    """``--bf16`` runs the timed step under CPU bf16 autocast and scores it against the bf16
    matmul peak (the comparison README "Benchmarks" quotes)."""
    seen: list[bool] = []
    real_build = bench_pretrain.build

    def spying_build(config: str, device: str, batches: int = 4, overrides=None):
        trainer = real_build(config, device, batches, overrides)
        trainer.model.context_encoder.register_forward_pre_hook(
            lambda module, args: seen.append(torch.is_autocast_enabled("cpu"))
        )
        return trainer

    monkeypatch.setattr(bench_pretrain, "build", spying_build)
    row = bench_pretrain.bench("default", steps=1, warmup=0, device="cpu", bf16=True)
    assert seen and all(seen)
    assert row["dtype"] == "bfloat16" and math.isfinite(row["final_loss"])
    assert row["fraction_of_peak"] == pytest.approx(
        row["achieved_gflops"] / row["peak_bf16_gflops"], rel=0.02
    )


def test_step_benchmark_set_overrides_reach_the_timed_trainer() -> None:
    """``--set`` (how the GPU check times ``train.compile``) changes the trainer that is timed,
    and the JSON line says which overrides it ran under."""
    row = bench_pretrain.bench(
        "default", steps=1, warmup=0, device="cpu", overrides={"train.batch_size": 8}
    )
    assert row["batch_size"] == 8 and row["overrides"] == {"train.batch_size": 8}


def test_step_benchmark_feeds_every_timed_step_from_one_loader_pass() -> None:
    """A new loader per pass restarts its workers inside the timed steps (on a GPU that read as
    data wait): the benchmark's set holds one batch for each warm-up and timed step, and more."""
    trainer = bench_pretrain.build("anchor", "cpu", batches=30)
    assert len(trainer.batches) >= 30
