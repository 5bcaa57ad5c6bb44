"""Each train.* knob does what it says: schedules, weight decay groups, clipping, augmentation,
checkpoint pruning and the device check (fast, no full training runs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_params

from hjepa.core.config import parse_params
from hjepa.core.errors import UserError
from hjepa.train.augment import Augmenter
from hjepa.train.checkpoint import list_checkpoints, save_checkpoint
from hjepa.train.trainer import Pretrainer, PretrainPaths


def trainer(**overrides) -> Pretrainer:
    params = parse_params(tiny_params(**overrides))
    images = np.random.default_rng(0).integers(0, 256, size=(256, 8, 8, 1), dtype=np.uint8)
    return Pretrainer(params, PretrainPaths(), log=lambda m: None, train_images=images)


def groups(t: Pretrainer) -> tuple[dict, dict]:
    decay = next(g for g in t.optimizer.param_groups if g["decays"])
    no_decay = next(g for g in t.optimizer.param_groups if not g["decays"])
    return decay, no_decay


def test_lr_warmup_then_cosine_to_min_lr_and_weight_decay_schedule():
    t = trainer(
        **{
            "train.epochs": 4,
            "train.warmup_epochs": 1,
            "train.batch_size": 64,
            "train.lr": 0.01,
            "train.min_lr": 0.001,
            "train.weight_decay_start": 0.05,
            "train.weight_decay_end": 0.5,
        }
    )
    assert t.steps_per_epoch == 4 and t.total_steps == 16 and t.schedules.warmup_steps == 4
    lrs = [t.train_step.set_schedules(s)[0] for s in range(t.total_steps)]
    assert lrs[0] == pytest.approx(0.01 / 4)  # warmup starts low
    assert lrs[3] == pytest.approx(0.01)  # and reaches lr at its end
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # cosine: never rises
    assert 0.001 < lrs[-1] < 0.0012  # the last step is one step short of min_lr
    assert t.train_step.set_schedules(t.total_steps)[0] == pytest.approx(0.001)
    lr, wd, _ = t.train_step.set_schedules(0)
    decay, no_decay = groups(t)
    assert wd == pytest.approx(0.05) and decay["weight_decay"] == pytest.approx(0.05)
    assert no_decay["weight_decay"] == 0.0  # biases, norms, gammas, pos-embeds: never decayed
    _, wd_last, _ = t.train_step.set_schedules(t.total_steps - 1)
    assert wd_last == pytest.approx(0.5)
    assert decay["lr"] == no_decay["lr"]


def test_min_lr_and_weight_decay_end_change_the_schedule_end():
    a = trainer(**{"train.min_lr": 1e-6, "train.weight_decay_end": 0.4})
    b = trainer(**{"train.min_lr": 1e-4, "train.weight_decay_end": 0.1})
    last = a.total_steps - 1
    assert a.train_step.set_schedules(last) != b.train_step.set_schedules(last)


def test_no_decay_group_holds_gammas_biases_norms_and_pos_embed():
    t = trainer(**{"model.layerscale.use_layerscale": True, "model.pos_embed": "learned"})
    _, no_decay = groups(t)
    ids = {id(p) for p in no_decay["params"]}
    names = [n for n, p in t.model.context_encoder.named_parameters() if id(p) in ids]
    assert any(n.endswith("ls1.gamma") for n in names)
    assert any("pos_embed" in n for n in names)
    assert any(n.endswith(".bias") for n in names)
    decay, _ = groups(t)
    assert all(p.ndim >= 2 for p in decay["params"])


def _one_step(t: Pretrainer) -> None:
    t.batches.set_epoch(0)
    b = t.batches[0]
    sched = t.train_step.set_schedules(0)
    t.train_step(b.images, b.masks, sched.momentum, b.second_view)


def test_grad_clip_bounds_the_gradient_norm():
    clipped = trainer(**{"train.grad_clip": 1e-3})
    _one_step(clipped)
    grads = [p.grad for g in clipped.optimizer.param_groups for p in g["params"]]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert float(norm) <= 1e-3 * 1.01
    free = trainer(**{"train.grad_clip": 0.0})
    _one_step(free)
    grads = [p.grad for g in free.optimizer.param_groups for p in g["params"]]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert float(norm) > 1e-2  # unclipped gradients are far larger


def _augmenter(**overrides) -> Augmenter:
    return Augmenter.from_params(parse_params(tiny_params(**overrides)).train.augment)


def test_augment_crop_scale_and_hflip():
    def g() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    ramp = torch.linspace(0, 1, 8).expand(16, 1, 8, 8).contiguous()  # varies left to right
    big = _augmenter(**{"train.augment.crop_scale": [0.9, 1.0]})
    small = _augmenter(**{"train.augment.crop_scale": [0.1, 0.2]})
    assert torch.equal(small(ramp, g()), small(ramp, g()))  # a pure function of the generator
    # Smaller crops zoom in: the left-to-right range of each image shrinks.
    span = lambda x: (x[..., -1] - x[..., 0]).mean()  # noqa: E731
    assert span(small(ramp, g())) < 0.6 * span(big(ramp, g()))
    flip = _augmenter(**{"train.augment.crop_scale": [0.9, 1.0], "train.augment.hflip": True})
    out, ref = flip(ramp, g()), big(ramp, g())
    mirrored = [torch.allclose(out[i], ref[i].flip(-1), atol=1e-5) for i in range(16)]
    same = [torch.allclose(out[i], ref[i], atol=1e-5) for i in range(16)]
    assert any(mirrored) and any(same)
    assert all(m or s for m, s in zip(mirrored, same, strict=True))


def test_augment_shear_leans_a_vertical_bar_both_ways():
    bar = -torch.ones(64, 1, 16, 16)
    bar[..., 2:14, 7:9] = 1.0  # a vertical stroke in the middle
    cols = torch.arange(16, dtype=torch.float32)

    def lean(x: torch.Tensor) -> torch.Tensor:
        """Ink centre of the top rows minus that of the bottom rows, per image (columns)."""
        ink = (x[:, 0] + 1) / 2
        centre = lambda rows: (rows * cols).sum((1, 2)) / rows.sum((1, 2))  # noqa: E731
        return centre(ink[:, 2:6]) - centre(ink[:, 10:14])

    whole = {"train.augment.crop_scale": [1.0, 1.0]}
    upright = _augmenter(**whole)(bar, torch.Generator().manual_seed(0))
    assert lean(upright).abs().max() < 1e-4
    sheared = _augmenter(**whole, **{"train.augment.shear_deg": 30.0})
    out = sheared(bar, torch.Generator().manual_seed(0))
    assert torch.equal(out, sheared(bar, torch.Generator().manual_seed(0)))
    leans = lean(out)
    # tan(30°) over 8 rows is up to 4.6 columns; the angle is drawn per image from ±30°.
    assert leans.max() > 2.0 and leans.min() < -2.0
    assert leans.abs().max() < 8 * math.tan(math.radians(30)) + 0.5


def test_augment_shear_off_leaves_every_draw_unchanged():
    """The shear draws from the generator only when on, so the default keeps old batches."""
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    used = torch.Generator().manual_seed(3)
    _augmenter(**{"train.augment.shear_deg": 0.0})(images, used)
    crop_only = torch.Generator().manual_seed(3)
    torch.rand(8, 5, generator=crop_only)  # the crop and flip draws, nothing else
    assert torch.equal(torch.rand(4, generator=used), torch.rand(4, generator=crop_only))
    on = torch.Generator().manual_seed(3)
    _augmenter(**{"train.augment.shear_deg": 10.0})(images, on)
    crop_only = torch.Generator().manual_seed(3)
    torch.rand(8, 5, generator=crop_only)
    assert not torch.equal(torch.rand(4, generator=on), torch.rand(4, generator=crop_only))


def test_augment_brightness_scales_intensity_above_black():
    """Black stays black, every other pixel of a view is multiplied by one gain within the
    range (clipped at white), and the gains differ from view to view."""
    images = torch.full((64, 1, 8, 8), -1.0)
    images[..., 2:6, 2:6] = 0.0  # mid-gray square on black: intensity above black = 1
    plain = _augmenter()(images, torch.Generator().manual_seed(0))
    shaded = _augmenter(**{"train.augment.brightness": 0.5})
    out = shaded(images, torch.Generator().manual_seed(0))  # the same crops, then a gain
    assert torch.equal(out, shaded(images, torch.Generator().manual_seed(0)))
    black = plain == -1
    assert black.any() and torch.equal(out[black], plain[black])
    lit = (plain + 1) > 0.1
    gains = ((out + 1) / (plain + 1)).where(lit, torch.nan).flatten(1)
    low, high = gains.nan_to_num(9.0).amin(1), gains.nan_to_num(0.0).amax(1)
    assert torch.allclose(low, high, atol=1e-4)  # one gain per view
    assert low.min() >= 1 / 1.5 - 1e-4 and high.max() <= 1.5 + 1e-4
    assert low.min() < 0.8 and high.max() > 1.25  # darker and lighter views both drawn
    white = torch.ones(64, 1, 8, 8)
    assert shaded(white, torch.Generator().manual_seed(0)).max() <= 1.0


def test_augment_brightness_off_leaves_every_draw_unchanged():
    """Like the shear: brightness 0 draws nothing, so the default keeps old batches."""
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    off = torch.Generator().manual_seed(3)
    base = _augmenter(**{"train.augment.brightness": 0.0})(images, off)
    crop_only = torch.Generator().manual_seed(3)
    torch.rand(8, 5, generator=crop_only)
    assert torch.equal(torch.rand(4, generator=off), torch.rand(4, generator=crop_only))
    on = torch.Generator().manual_seed(3)
    shaded = _augmenter(**{"train.augment.brightness": 0.3})(images, on)
    assert not torch.equal(shaded, base)


def test_keep_checkpoints_prunes_to_the_newest(tmp_path: Path):
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, epoch, {"params_hash": "x", "epoch": epoch}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt_epoch0004.pt",
        "ckpt_epoch0005.pt",
    ]
    assert sorted(p.name for p in tmp_path.glob("*.sha256")) == [
        "ckpt_epoch0004.pt.sha256",
        "ckpt_epoch0005.pt.sha256",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_device_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(UserError, match="train.device is 'cuda'"):
        trainer(**{"train.device": "cuda"})


def test_warmup_longer_than_the_run_is_clamped_with_a_notice():
    # train.epochs alone can be lowered for a quick run: the default warmup (2) is clamped.
    params = parse_params(tiny_params(**{"train.epochs": 2, "train.warmup_epochs": 2}))
    assert params.train.warmup_epochs_used == 1
    notices: list[str] = []
    images = np.random.default_rng(0).integers(0, 256, size=(256, 8, 8, 1), dtype=np.uint8)
    t = Pretrainer(params, PretrainPaths(), log=notices.append, train_images=images)
    assert t.schedules.warmup_steps == t.steps_per_epoch  # one epoch of warmup, one of decay
    assert t.train_step.set_schedules(t.steps_per_epoch)[0] == pytest.approx(
        params.train.lr
    )  # peak reached
    assert notices == ["notice: train.warmup_epochs 2 > train.epochs - 1; using 1"]
    assert parse_params(tiny_params(**{"train.epochs": 1})).train.warmup_epochs_used == 0


def test_warmup_epochs_zero_starts_at_full_lr():
    t = trainer(**{"train.warmup_epochs": 0, "train.lr": 0.002})
    assert t.train_step.set_schedules(0)[0] == pytest.approx(0.002)
    assert math.isclose(t.schedules.warmup_steps, 0)
