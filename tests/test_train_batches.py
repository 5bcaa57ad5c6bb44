"""Pretraining reads the prepared split at size: memory-mapped, one batch's rows at a time, and
(on CUDA) through pinned memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_params

from hjepa.core.config import parse_params
from hjepa.core.prepared import load_split
from hjepa.train.augment import Augmenter
from hjepa.train.batches import EpochSpan, PretrainBatches, make_loader
from hjepa.train.masks import MaskGenerator


class RowCounter:
    """An image array that records how many rows each read asks for."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.reads = images, []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        rows = self.images[index]
        self.reads.append(len(rows))
        return rows


def make_batches(images, batch_size: int = 32) -> PretrainBatches:
    params = parse_params(tiny_params())
    return PretrainBatches(
        images,
        batch_size=batch_size,
        seed=0,
        masks=MaskGenerator.from_params(params.mask, params.grid_size),
        augment=Augmenter.from_params(params.train.augment),
    )


def test_batches_read_the_memory_map_one_batch_at_a_time(prepared_digits):
    images, _ = load_split(prepared_digits, "train")
    assert isinstance(images, np.memmap) and not images.flags.writeable
    counter = RowCounter(images)
    batches = make_batches(counter)
    assert batches.images is counter  # kept by reference, never copied whole
    for batch in make_loader(batches, num_workers=0):
        assert batch.images.shape[0] == 32
    assert counter.reads == [32] * len(batches)  # only each batch's rows were read


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_loader_pins_batches_on_cuda(prepared_digits):
    images, _ = load_split(prepared_digits, "train")
    batch = next(iter(make_loader(make_batches(images), num_workers=1, pin_memory=True)))
    assert batch.images.is_pinned() and batch.masks.context_idx.is_pinned()
    moved = batch.to(torch.device("cuda"))
    assert moved.images.is_cuda and moved.masks.target_idx.is_cuda


def test_one_loader_over_several_epochs_gives_each_epochs_own_batches(prepared_digits):
    """The trainer reads all its epochs through one loader (workers start once): batch k of
    the span must be the batch ``set_epoch`` + index gives, epoch after epoch, in the main
    process and in workers alike."""
    images, _ = load_split(prepared_digits, "train")
    batches = make_batches(images)
    n = len(batches)
    expected = []
    for epoch in (1, 2):
        batches.set_epoch(epoch)
        expected += [batches[i] for i in range(n)]
    span = EpochSpan(make_batches(images), first=1, stop=3)
    assert len(span) == 2 * n
    for workers in (0, 2):
        got = list(make_loader(span, num_workers=workers))
        assert len(got) == 2 * n
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a.images, b.images)
            assert torch.equal(a.masks.context_idx, b.masks.context_idx)
    assert not torch.equal(expected[0].images, expected[n].images)  # epochs do differ
    with pytest.raises(IndexError):
        span[2 * n]
    assert len(EpochSpan(batches, first=3, stop=3)) == 0  # a run resumed at its last epoch
