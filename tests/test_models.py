"""Encoder (LayerScale, drop path, token dropping, padding), predictor, H-JEPA loss, save/load."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_params

from hjepa.core.config import parse_params
from hjepa.core.errors import UserError
from hjepa.models.encoder import (
    build_encoder,
    count_parameters,
    encoder_arch,
    load_encoder,
    save_encoder,
)
from hjepa.models.hjepa import HJEPA, coarse_targets
from hjepa.models.loss import masked_smooth_l1
from hjepa.models.predictor import pool_grid
from hjepa.train.ema import ema_update
from hjepa.train.masks import MaskGenerator, Masks

LS_ON = {"model.layerscale.use_layerscale": True}


def params(**overrides):
    return parse_params(tiny_params(**overrides))


def images(p, batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = p.data.image_size
    return torch.randn(batch, p.data.channels, size, size, generator=g)


def masks_for(p, batch: int = 4, seed: int = 0) -> Masks:
    return MaskGenerator.from_params(p.mask, p.grid_size).sample(
        batch, torch.Generator().manual_seed(seed)
    )


def encoder(p, seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder(encoder_arch(p.model, p.data))


# ------------------------------------------------------------------------------------ LayerScale
def test_layerscale_adds_exactly_the_gammas_initialised_to_init_value() -> None:
    off, on = params(), params(**LS_ON, **{"model.layerscale.init_value": 0.25})
    enc_off, enc_on = encoder(off), encoder(on)
    depth, width = on.model.depth, on.model.width
    assert count_parameters(enc_on) - count_parameters(enc_off) == 2 * depth * width
    extra = set(dict(enc_on.named_parameters())) - set(dict(enc_off.named_parameters()))
    assert len(extra) == 2 * depth
    assert all(n.endswith((".ls1.gamma", ".ls2.gamma")) for n in extra)
    for name in extra:
        gamma = dict(enc_on.named_parameters())[name]
        assert gamma.shape == (width,)
        assert torch.all(gamma == 0.25)
    # Both encoders of the composite carry them (the teacher is a copy of the student).
    model = HJEPA.from_params(on.model, on.data)
    for enc in (model.context_encoder, model.target_encoder):
        assert sum(n.endswith(".gamma") for n, _ in enc.named_parameters()) == 2 * depth


def test_layerscale_and_its_init_value_change_the_output() -> None:
    x = images(params())
    outs = {}
    for name, over in {
        "off": {},
        "on_0.1": {**LS_ON, "model.layerscale.init_value": 0.1},
        "on_0.5": {**LS_ON, "model.layerscale.init_value": 0.5},
    }.items():
        enc = encoder(params(**over)).eval()
        with torch.no_grad():
            outs[name] = enc(x).tokens
    assert not torch.allclose(outs["off"], outs["on_0.1"])
    assert not torch.allclose(outs["on_0.1"], outs["on_0.5"])


def test_gammas_learn_in_the_context_encoder_and_ema_moves_the_target_ones() -> None:
    p = params(**LS_ON)
    torch.manual_seed(0)
    model = HJEPA.from_params(p.model, p.data)
    out = model(images(p), masks_for(p), images(p).flip(-1))
    out.loss.backward()
    ctx = dict(model.context_encoder.named_parameters())
    tgt = dict(model.target_encoder.named_parameters())
    gammas = [n for n in ctx if n.endswith(".gamma")]
    assert gammas
    for name in gammas:
        assert ctx[name].grad is not None and ctx[name].grad.abs().sum() > 0
        assert tgt[name].grad is None and not tgt[name].requires_grad
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-2)
    opt.step()
    before = {n: tgt[n].detach().clone() for n in gammas}
    ema_update(model.target_encoder, model.context_encoder, 0.9)
    for name in gammas:
        assert not torch.equal(ctx[name], before[name])  # the step moved the context gammas
        expected = 0.9 * before[name] + 0.1 * ctx[name].detach()
        torch.testing.assert_close(tgt[name], expected, rtol=0, atol=1e-7)
        assert not torch.equal(tgt[name], before[name])


def test_drop_path_stays_active_with_layerscale() -> None:
    p = params(**LS_ON, **{"model.drop_path": 0.5})
    enc = encoder(p)
    assert any(type(b.drop_path1).__name__ == "DropPath" for b in enc.vit.blocks)
    x = images(p)
    enc.train()
    torch.manual_seed(1)
    a = enc(x).tokens
    b = enc(x).tokens
    assert not torch.allclose(a, b)
    enc.eval()
    torch.testing.assert_close(enc(x).tokens, enc(x).tokens, rtol=0, atol=0)


# ------------------------------------------------------------------------- tokens and padding
def test_context_encoder_runs_only_on_context_tokens() -> None:
    p = params()
    model = HJEPA.from_params(p.model, p.data)
    seen: dict[str, int] = {}

    def hook(tag):
        return lambda _m, args: seen.__setitem__(tag, args[0].shape[1])

    model.context_encoder.vit.blocks[0].register_forward_pre_hook(hook("context"))
    model.target_encoder.vit.blocks[0].register_forward_pre_hook(hook("target"))
    masks = masks_for(p)
    model(images(p), masks, images(p).flip(-1))
    assert seen["context"] == masks.context_idx.shape[1] < p.grid_size**2
    assert seen["target"] == p.grid_size**2


def test_padded_context_tokens_are_hidden_from_attention() -> None:
    p = params()
    enc = encoder(p).eval()
    x = images(p, batch=2)
    idx = torch.tensor([[0, 3, 5, 9, 12], [1, 2, 7, 7, 7]])
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        batched = enc(x, keep_idx=idx, pad_mask=pad).tokens
        alone = enc(x[1:], keep_idx=idx[1:, :3]).tokens
        unmasked = enc(x, keep_idx=idx).tokens
    torch.testing.assert_close(batched[1, :3], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked[1, :3], alone[0], atol=1e-5)


def test_return_blocks_are_raw_block_outputs() -> None:
    p = params()
    enc = encoder(p).eval()
    x = images(p)
    with torch.no_grad():
        out = enc(x, return_blocks=[1, 2])
        assert set(out.blocks) == {1, 2}
        torch.testing.assert_close(enc.vit.norm(out.blocks[2]), out.tokens)
    with pytest.raises(ValueError, match="outside"):
        enc(x, return_blocks=[3])


# ---------------------------------------------------------------------------- hierarchy & loss
def _ijepa_predict(pred, context, context_idx, target_idx):
    """I-JEPA's predictor, one target block at a time, no batching tricks and no padding."""
    pos = pred.pos_embed[0]
    x = pred.embed(context) + pos[context_idx]
    q = pred.mask_tokens[0] + pos[target_idx]
    seq = torch.cat([x, q], dim=1)
    for block in pred.blocks:
        seq = block(seq)
    return pred.heads[0](pred.norm(seq)[:, context.shape[1] :])


def test_one_level_hierarchy_is_exactly_ijepa() -> None:
    p = params(
        **{
            "model.hierarchy": [{"depth": 2, "scale": 1, "weight": 1.0}],
            "mask.context_batching": "trim",
            "model.vicreg_weight": 0.0,  # I-JEPA has no regulariser (issue 9 added one)
            "model.invariance_weight": 0.0,  # ... and no two-view term (issue 9 too)
        }
    )
    torch.manual_seed(0)
    model = HJEPA.from_params(p.model, p.data)
    x, masks = images(p), masks_for(p)
    assert not masks.context_pad.any() and not masks.target_pad.any()
    out = model(x, masks)

    with torch.no_grad():
        h = model.target_encoder(x).tokens
        h = F.layer_norm(h, (h.shape[-1],))
    z = model.context_encoder(x, keep_idx=masks.context_idx).tokens
    preds, targets = [], []
    for j in range(masks.target_idx.shape[1]):
        idx = masks.target_idx[:, j]
        preds.append(_ijepa_predict(model.predictor, z, masks.context_idx, idx))
        targets.append(torch.stack([h[b, idx[b]] for b in range(x.shape[0])]))
    expected = F.smooth_l1_loss(torch.cat(preds), torch.cat(targets))
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert len(out.level_losses) == 1
    torch.testing.assert_close(out.level_losses[0], expected.detach(), rtol=1e-5, atol=1e-6)


def test_two_levels_give_a_different_loss_with_per_level_terms() -> None:
    one = params(**{"model.hierarchy": [{"depth": 2, "scale": 1, "weight": 1.0}]})
    two = params()  # tiny: (1, 2, 0.5) and (2, 1, 1.0)
    x, masks = images(one), masks_for(one)
    view = x.flip(-1)
    torch.manual_seed(0)
    loss_one = HJEPA.from_params(one.model, one.data)(x, masks, view)
    torch.manual_seed(0)
    out = HJEPA.from_params(two.model, two.data)(x, masks, view)
    assert len(out.level_losses) == 2
    assert not torch.isclose(out.loss, loss_one.loss)
    weighted = 0.5 * out.level_losses[0] + 1.0 * out.level_losses[1]
    # The default VICReg and two-view terms (weight 1.0) are part of the total.
    assert out.reg_loss is not None and out.inv_loss is not None
    torch.testing.assert_close(out.loss.detach(), weighted + out.reg_loss + out.inv_loss)
    assert float(out.target_std) > 0


def test_level_weights_scale_their_terms() -> None:
    a = params()
    b = params(
        **{
            "model.hierarchy": [
                {"depth": 1, "scale": 2, "weight": 3.0},
                {"depth": 2, "scale": 1, "weight": 1.0},
            ]
        }
    )
    x, masks = images(a), masks_for(a)
    torch.manual_seed(0)
    out_a = HJEPA.from_params(a.model, a.data)(x, masks, x.flip(-1))
    torch.manual_seed(0)
    out_b = HJEPA.from_params(b.model, b.data)(x, masks, x.flip(-1))
    torch.testing.assert_close(out_a.level_losses[0], out_b.level_losses[0])
    torch.testing.assert_close(out_b.loss - out_a.loss, 2.5 * out_a.level_losses[0])


def test_coarse_targets_are_the_cells_a_block_touches() -> None:
    grid = 4  # cells of scale 2: 0 = rows 0-1/cols 0-1, 1 = rows 0-1/cols 2-3, 2, 3 below
    idx = torch.tensor([[[0, 1, 4, 5], [5, 6, 9, 10]]])  # a cell-aligned block, a centred one
    pad = torch.zeros_like(idx, dtype=torch.bool)
    cells, cell_pad = coarse_targets(idx, pad, grid, 2)
    assert cells.shape == (1, 2, 4)
    assert cells[0, 0, :1].tolist() == [0] and cell_pad[0, 0].tolist() == [False] + [True] * 3
    assert cells[0, 1].tolist() == [0, 1, 2, 3] and not cell_pad[0, 1].any()
    # padded fine entries do not count
    pad2 = torch.tensor([[[False] * 4, [False, True, True, True]]])
    cells2, cell_pad2 = coarse_targets(idx, pad2, grid, 2)
    assert (~cell_pad2).sum(-1).tolist() == [[1, 1]]
    # the pooled features average exactly the s×s cell
    x = torch.arange(16.0).reshape(1, 16, 1)
    assert pool_grid(x, 4, 2)[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_batched_predictor_with_padding_matches_one_image_at_a_time() -> None:
    p = params()  # context_batching: pad, two levels (one pooled)
    torch.manual_seed(0)
    model = HJEPA.from_params(p.model, p.data).eval()
    x, masks = images(p, batch=4, seed=3), masks_for(p, batch=4, seed=3)
    assert masks.context_pad.any(), "this seed should give contexts of different lengths"
    with torch.no_grad():
        ctx = model.context_encoder(x, keep_idx=masks.context_idx, pad_mask=masks.context_pad)
        queries = [coarse_targets(masks.target_idx, masks.target_pad, 4, s) for s in (2, 1)]
        batched = model.predictor(ctx.tokens, masks.context_idx, masks.context_pad, queries)
        for b in range(4):
            keep = ~masks.context_pad[b]
            c_idx = masks.context_idx[b : b + 1, keep]
            c = model.context_encoder(x[b : b + 1], keep_idx=c_idx).tokens
            qs = []
            for idx, pad in queries:
                n = int((~pad[b]).sum(-1).max())  # this image's own longest block
                qs.append((idx[b : b + 1, :, :n], pad[b : b + 1, :, :n]))
            single = model.predictor(c, c_idx, None, qs)
            for level, (_idx, pad) in enumerate(queries):
                n = qs[level][0].shape[-1]
                real = ~pad[b, :, :n]
                torch.testing.assert_close(
                    batched[level][b, :, :n][real], single[level][0][real], rtol=1e-4, atol=1e-5
                )


def test_loss_ignores_padding_and_matches_plain_smooth_l1() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)
    torch.testing.assert_close(masked_smooth_l1(pred, target), F.smooth_l1_loss(pred, target))
    pad = torch.zeros(2, 3, 5, dtype=torch.bool)
    pad[..., 3:] = True
    base = masked_smooth_l1(pred, target, pad)
    torch.testing.assert_close(base, F.smooth_l1_loss(pred[..., :3, :], target[..., :3, :]))
    pred2 = pred.clone()
    pred2[..., 3:, :] += 100.0
    torch.testing.assert_close(masked_smooth_l1(pred2, target, pad), base)


# ------------------------------------------------------------------------------- save / load
def test_encoder_save_load_round_trip(tmp_path) -> None:
    p = params(**LS_ON, **{"model.pos_embed": "learned"})
    enc = encoder(p).eval()
    path = tmp_path / "enc.pt"
    save_encoder(path, enc, extra={"epochs": 3})
    loaded = load_encoder(path).eval()
    assert loaded.arch == enc.arch
    x = images(p)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).tokens, enc(x).tokens, rtol=0, atol=0)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "hjepa-encoder/1" and payload["extra"] == {"epochs": 3}


def test_encoder_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_encoder(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="corrupt.pt: not a readable encoder"):
        load_encoder(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else/9"}, foreign)
    with pytest.raises(UserError, match="hjepa-encoder/1"):
        load_encoder(foreign)
    enc = encoder(params())
    save_encoder(tmp_path / "ok.pt", enc)
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["arch"]["width"] = 32
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(UserError, match="do not match"):
        load_encoder(tmp_path / "mismatch.pt")


# -------------------------------------------------------------------------------- train step
def test_one_training_step_on_cpu_is_fast(capsys) -> None:
    p = params(**LS_ON)
    torch.manual_seed(0)
    model = HJEPA.from_params(p.model, p.data)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    x, masks = images(p, batch=32), masks_for(p, batch=32)

    def step() -> float:
        out = model(x, masks, x.flip(-1))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        ema_update(model.target_encoder, model.context_encoder, 0.996)
        return float(out.loss.detach())

    first = step()  # warm-up
    start = time.perf_counter()
    second = step()
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[timing] tiny H-JEPA train step (batch 32, CPU): {elapsed * 1000:.1f} ms")
    assert second < first  # the step learns something
    assert elapsed < 5.0  # generous: timing belongs in benchmarks
