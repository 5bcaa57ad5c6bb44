"""Multi-block masking: termination, invariants, reachability, determinism, and that every mask
param changes the masks (hjepa/train/masks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_params
from hypothesis import given, settings
from hypothesis import strategies as st

from hjepa.core.config import MaskParams, parse_params, reads, reset_reads
from hjepa.core.errors import UserError
from hjepa.train.masks import MaskGenerator, MaskInfo, Masks, mask_stats


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(grid: int, batch: int = 32, seed: int = 0, **kw: object) -> tuple[Masks, MaskInfo]:
    return MaskGenerator.from_params(MaskParams(**kw), grid).sample_with_info(batch, gen(seed))


def contexts(masks: Masks) -> list[set[int]]:
    return [
        set(row[~pad].tolist())
        for row, pad in zip(masks.context_idx, masks.context_pad, strict=True)
    ]


def target_unions(masks: Masks) -> list[set[int]]:
    return [
        set(blocks[~pad].tolist())
        for blocks, pad in zip(masks.target_idx, masks.target_pad, strict=True)
    ]


def block_shape(idx: torch.Tensor, grid: int) -> tuple[int, int]:
    rows, cols = idx // grid, idx % grid
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def check_invariants(masks: Masks, info: MaskInfo, p: MaskParams, grid: int, batch: int) -> None:
    area = grid * grid
    ci, cp, ti, tp = masks.context_idx, masks.context_pad, masks.target_idx, masks.target_pad
    assert ci.dtype == torch.int64 and ti.dtype == torch.int64
    assert cp.dtype == torch.bool and tp.dtype == torch.bool
    assert ci.shape == cp.shape and ci.shape[0] == batch and ci.shape[1] >= 1
    h, w = info.target_shape
    assert ti.shape == tp.shape == (batch, p.num_targets, h * w)
    assert not tp.any()  # targets: equal length per batch, never padded
    for t in (ci, ti):
        assert int(t.min()) >= 0 and int(t.max()) < area
    if p.context_batching == "trim":
        assert not cp.any()
    for i in range(batch):
        real = ci[i][~cp[i]]
        assert real.numel() >= 1, "empty context"
        assert bool((real[1:] > real[:-1]).all()), "context not sorted / not unique"
        # Padding only trails, and holds a valid (the first real) index.
        n = real.numel()
        assert not cp[i, :n].any() and cp[i, n:].all()
        assert bool((ci[i, n:] == real[0]).all())
        union: set[int] = set()
        for blk in ti[i]:
            assert bool((blk[1:] > blk[:-1]).all()), "target block not sorted"
            top, left = int(blk[0]) // grid, int(blk[0]) % grid
            want = {(top + r) * grid + left + c for r in range(h) for c in range(w)}
            assert set(blk.tolist()) == want, "target is not an h×w rectangle"
            union |= want
        assert not union & set(real.tolist()), "context overlaps a target"
        if info.level[i] == 0 and p.context_batching == "pad":
            # Relaxation not needed: min_keep met, context inside one k×k square.
            assert n >= p.min_keep
            assert max(block_shape(real, grid)) <= info.context_side


def expected_side(x: float) -> int:
    return math.floor(x + 0.5)


pairs = st.tuples(st.floats(1e-3, 1.0), st.floats(1e-3, 1.0)).map(sorted)
aspects = st.tuples(st.floats(0.05, 10.0), st.floats(0.05, 10.0)).map(sorted)
mask_params = st.builds(
    MaskParams,
    num_targets=st.integers(1, 16),
    target_scale=pairs,
    target_aspect=aspects,
    context_scale=pairs,
    min_keep=st.integers(1, 300),
    context_batching=st.sampled_from(["pad", "trim"]),
)


@settings(deadline=None, max_examples=300)
@given(
    p=mask_params,
    grid=st.integers(2, 16),
    batch=st.integers(1, 12),
    seed=st.integers(0, 2**32),
)
def test_terminates_with_valid_non_overlapping_masks(
    p: MaskParams, grid: int, batch: int, seed: int
) -> None:
    masks, info = MaskGenerator.from_params(p, grid).sample_with_info(batch, gen(seed))
    check_invariants(masks, info, p, grid, batch)


@settings(deadline=None, max_examples=200)
@given(p=mask_params, grid=st.integers(2, 16), seed=st.integers(0, 2**32))
def test_block_sizes_follow_scale_and_aspect(p: MaskParams, grid: int, seed: int) -> None:
    """h = round(sqrt(s·A·a)), w = round(sqrt(s·A/a)), context side round(sqrt(s·A)), all
    clipped to [1, grid]; only a full-grid target is shrunk (by one row)."""
    area = grid * grid

    def clip(x: float) -> int:
        return min(max(expected_side(x), 1), grid)

    _, info = MaskGenerator.from_params(p, grid).sample_with_info(4, gen(seed))
    (s_lo, s_hi), (a_lo, a_hi), (c_lo, c_hi) = p.target_scale, p.target_aspect, p.context_scale
    h, w = info.target_shape
    if info.target_shrunk:
        assert (h, w) == (grid - 1, grid)
        h = grid
    else:
        assert (h, w) != (grid, grid)
    # 1e-9: the scale/aspect draw is exact only up to float rounding at the range ends.
    assert clip(math.sqrt(s_lo * area * a_lo) - 1e-9) <= h <= clip(math.sqrt(s_hi * area * a_hi))
    assert clip(math.sqrt(s_lo * area / a_hi) - 1e-9) <= w <= clip(math.sqrt(s_hi * area / a_lo))
    lo, hi = clip(math.sqrt(c_lo * area) - 1e-9), clip(math.sqrt(c_hi * area) + 1e-9)
    assert lo <= info.context_side <= hi


def test_tiny_grid_with_many_targets_gives_way_in_documented_order() -> None:
    """2×2, 4 one-cell targets, min_keep far above the grid: still a context and targets."""
    p = MaskParams(num_targets=4, target_scale=(0.2, 0.2), min_keep=100)
    masks, info = MaskGenerator.from_params(p, 2).sample_with_info(256, gen(1))
    check_invariants(masks, info, p, 2, 256)
    levels = set(info.level.tolist())
    assert 0 not in levels  # min_keep can never be met on 4 cells
    assert levels == {1, 2}  # some images have targets covering all 4 cells: corner reserved


def test_full_grid_target_is_shrunk() -> None:
    p = MaskParams(num_targets=3, target_scale=(1.0, 1.0), target_aspect=(1.0, 1.0))
    masks, info = MaskGenerator.from_params(p, 3).sample_with_info(16, gen(0))
    assert info.target_shrunk and info.target_shape == (2, 3)
    assert (info.level == 2).any() or (info.level == 1).any()
    check_invariants(masks, info, p, 3, 16)


def test_grid_of_one_token_is_a_user_error() -> None:
    with pytest.raises(UserError, match="2×2"):
        MaskGenerator.from_params(MaskParams(), 1)


@pytest.mark.parametrize(("grid", "scale"), [(3, 0.1), (4, 0.25), (8, 0.25)])
def test_every_cell_reachable_by_context_and_targets(grid: int, scale: float) -> None:
    """The I-JEPA reference never masks the last row/column (exclusive randint bound).

    (On 3×3 the target is 1×1: every 2×2 block there covers the centre, so with 2×2 targets the
    centre could never be context.)"""
    p = MaskParams(
        num_targets=1,
        target_scale=(scale, scale),
        target_aspect=(1.0, 1.0),
        context_scale=(0.5, 0.5),
        min_keep=1,
    )
    gen_ = MaskGenerator.from_params(p, grid)
    ctx_seen: set[int] = set()
    tgt_seen: set[int] = set()
    corners: set[int] = set()
    for seed in range(20):
        masks, info = gen_.sample_with_info(16, gen(seed))
        assert (info.level == 0).all()  # reachability from the block draw itself, no fallback
        for c in contexts(masks):
            ctx_seen |= c
        for u in target_unions(masks):
            tgt_seen |= u
        corners |= set(masks.target_idx[:, :, 0].flatten().tolist())
    assert ctx_seen == set(range(grid * grid))
    assert tgt_seen == set(range(grid * grid))
    h, w = info.target_shape
    assert len(corners) == (grid - h + 1) * (grid - w + 1)  # every valid top-left drawn


def test_pure_function_of_the_generator() -> None:
    m = MaskGenerator.from_params(MaskParams(), 8)
    torch.manual_seed(1)
    a = m.sample(16, gen(7))
    torch.manual_seed(2)  # the global RNG has no say
    b = m.sample(16, gen(7))
    c = m.sample(16, gen(8))
    for f in ("context_idx", "context_pad", "target_idx", "target_pad"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.target_idx, c.target_idx)
    before = torch.get_rng_state()  # ... and is never consumed
    m.sample(16, gen(7))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("grid", [4, 8, 16])
def test_trim_cuts_to_batch_minimum_and_pad_keeps_per_image_lengths(grid: int) -> None:
    pad, _ = draw(grid, 32, seed=3, context_batching="pad")
    trim, _ = draw(grid, 32, seed=3, context_batching="trim")
    lengths = (~pad.context_pad).sum(1)
    assert len(set(lengths.tolist())) > 1  # per-image lengths differ
    assert pad.context_idx.shape[1] == int(lengths.max())
    assert pad.context_pad.any()
    assert trim.context_idx.shape[1] == int(lengths.min()) < pad.context_idx.shape[1]
    assert not trim.context_pad.any()
    # Same draws up to trimming: each trimmed context is a subset of the untrimmed one.
    assert torch.equal(trim.target_idx, pad.target_idx)
    for t, full in zip(contexts(trim), contexts(pad), strict=True):
        assert t <= full
    assert mask_stats(pad, grid * grid)["padding_fraction"] > 0
    assert mask_stats(trim, grid * grid)["padding_fraction"] == 0


def test_trim_keeps_a_random_subset_not_the_first_indices() -> None:
    """I-JEPA keeps each context's first indices (top rows); trimming here is unbiased."""
    trim, _ = draw(8, 64, seed=0, context_batching="trim", min_keep=1)
    pad, _ = draw(8, 64, seed=0, context_batching="pad", min_keep=1)
    n = trim.context_idx.shape[1]
    firsts = [sorted(c)[:n] for c in contexts(pad)]
    assert any(sorted(t) != f for t, f in zip(contexts(trim), firsts, strict=True))


def stats(grid: int = 8, batch: int = 64, **kw: object) -> dict[str, float]:
    masks, _ = draw(grid, batch, seed=11, **kw)
    return mask_stats(masks, grid * grid)


def test_num_targets_has_an_effect() -> None:
    assert stats(num_targets=1)["target_fraction"] < stats(num_targets=4)["target_fraction"]


def test_target_scale_has_an_effect() -> None:
    small = stats(target_scale=(0.05, 0.05))["target_fraction"]
    assert small < stats(target_scale=(0.3, 0.3))["target_fraction"]


def test_target_aspect_sets_block_shape() -> None:
    tall, _ = draw(8, 8, target_aspect=(3.0, 3.0), target_scale=(0.2, 0.2))
    wide, _ = draw(8, 8, target_aspect=(0.33, 0.33), target_scale=(0.2, 0.2))
    th, tw = block_shape(tall.target_idx[0, 0], 8)
    wh, ww = block_shape(wide.target_idx[0, 0], 8)
    assert th > tw and wh < ww


def test_context_scale_has_an_effect() -> None:
    kw = {"num_targets": 1, "min_keep": 1}
    small = stats(context_scale=(0.3, 0.3), **kw)["context_fraction"]
    assert small < stats(context_scale=(1.0, 1.0), **kw)["context_fraction"]


def test_min_keep_binds_where_the_grid_allows() -> None:
    """6×6, 4×4 context block, two 2×2 targets: min_keep 14 rejects crowded contexts."""
    kw = {
        "num_targets": 2,
        "target_scale": (0.1, 0.1),
        "target_aspect": (1.0, 1.0),
        "context_scale": (0.45, 0.45),
    }
    loose, _ = draw(6, 64, seed=5, min_keep=1, **kw)
    strict, info = draw(6, 64, seed=5, min_keep=14, **kw)
    assert info.context_side == 4 and info.target_shape == (2, 2)
    assert min(map(len, contexts(loose))) < 14 <= min(map(len, contexts(strict)))
    assert mask_stats(loose, 36)["context_fraction"] < mask_stats(strict, 36)["context_fraction"]


def test_context_batching_has_an_effect() -> None:
    pad, trim = stats(context_batching="pad"), stats(context_batching="trim")
    assert trim["context_fraction"] < pad["context_fraction"]
    assert pad["padding_fraction"] > 0 == trim["padding_fraction"]


def test_mask_stats_values() -> None:
    masks = Masks(
        context_idx=torch.tensor([[0, 1], [2, 2]]),
        context_pad=torch.tensor([[False, False], [False, True]]),
        target_idx=torch.tensor([[[2, 3]], [[0, 1]]]),
        target_pad=torch.tensor([[[False, False]], [[False, False]]]),
    )
    s = mask_stats(masks, 4)
    assert s == {"context_fraction": 0.375, "target_fraction": 0.5, "padding_fraction": 0.25}


def test_reads_every_mask_param() -> None:
    params = parse_params(tiny_params())
    reset_reads()
    MaskGenerator.from_params(params.mask, params.grid_size)
    want = {f"mask.{k}" for k in MaskParams.model_fields}
    assert want <= reads()


def test_default_params_on_small_grids_keep_most_images_unrelaxed() -> None:
    """With the shipped defaults the I-JEPA recipe holds on 8×8 (no fallback needed)."""
    p = parse_params(tiny_params()).mask
    masks, info = MaskGenerator.from_params(p, 8).sample_with_info(128, gen(0))
    check_invariants(masks, info, p, 8, 128)
    assert (info.level == 0).all()
