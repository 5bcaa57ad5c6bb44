"""Pretraining batches: each batch is a pure function of (seed, epoch, batch index).

Why not the usual per-sample Dataset + random sampler + worker RNG: a batch built from its own
``torch.Generator`` (data order, augmentation and masks all drawn from it) is identical whether
it is made in the main process or in any DataLoader worker, after a resume, or under DDP (every
rank builds the same global batch and keeps its own slice, so the global batch stays
``train.batch_size``). That is what makes resume bitwise exact and DDP match one process.
Masks are built here, i.e. in the DataLoader's worker processes when ``train.num_workers > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hjepa.core.config import Params
from hjepa.core.transforms import to_model_input
from hjepa.train.augment import Augmenter
from hjepa.train.masks import MaskGenerator, Masks


def batch_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for one batch (``stream`` separates independent uses)."""
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def _whole_batch(batch: Any) -> Any:
    return batch


@dataclass
class Batch:
    images: torch.Tensor  # float N×C×H×W, augmented model input
    masks: Masks
    second_view: torch.Tensor | None = None  # the same images, another augmentation draw

    def _map(self, move: Any) -> Batch:
        masks = type(self.masks)(
            **{f.name: move(getattr(self.masks, f.name)) for f in fields(self.masks)}
        )
        view = self.second_view
        return Batch(move(self.images), masks, None if view is None else move(view))

    def to(self, device: torch.device) -> Batch:
        """On ``device``; from pinned memory (``make_loader(pin_memory=True)``) the copies are
        asynchronous, overlapping the previous step."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``) on CUDA."""
        return self._map(lambda t: t.pin_memory())


def slice_masks(masks: Masks, start: int, stop: int) -> Masks:
    return type(masks)(**{f.name: getattr(masks, f.name)[start:stop] for f in fields(masks)})


class PretrainBatches(Dataset):
    """Indexable by batch number within the current epoch (``set_epoch`` before iterating);
    ``batch(epoch, index)`` builds any epoch's batch directly (``EpochSpan``)."""

    def __init__(
        self,
        images: np.ndarray,  # uint8 N×H×W×C; a read-only memory map is read row by row
        batch_size: int,
        seed: int,
        masks: MaskGenerator,
        augment: Augmenter,
        rank: int = 0,
        world_size: int = 1,
        two_views: bool = False,
    ) -> None:
        """``two_views``: also build ``Batch.second_view`` (for ``model.invariance_weight``)."""
        if batch_size % world_size:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be divisible by the number of "
                f"processes ({world_size})"
            )
        if len(images) < batch_size:
            raise ValueError(
                f"train.batch_size ({batch_size}) exceeds the {len(images)} training images"
            )
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.mask_generator = masks
        self.augment = augment
        self.rank = rank
        self.world_size = world_size
        self.two_views = two_views
        self.epoch = 0
        self._order_epoch, self._order = 0, self._permutation(0)

    @classmethod
    def from_params(
        cls, params: Params, images: np.ndarray, rank: int = 0, world_size: int = 1
    ) -> PretrainBatches:
        """The batches ``params`` describe: ``train.batch_size``, ``seed``, the ``mask`` section,
        ``train.augment``, and a second view when ``model.invariance_weight`` > 0."""
        return cls(
            images,
            batch_size=params.train.batch_size,
            seed=params.seed,
            masks=MaskGenerator.from_params(params.mask, params.grid_size),
            augment=Augmenter.from_params(params.train.augment),
            rank=rank,
            world_size=world_size,
            two_views=params.model.invariance_weight > 0,
        )

    def _permutation(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(batch_seed(self.seed, epoch, 0, stream=1))
        return torch.randperm(len(self.images), generator=g).numpy()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order_of(self, epoch: int) -> np.ndarray:
        """The epoch's data order, kept for the epoch being built (one randperm per epoch)."""
        if epoch != self._order_epoch:
            self._order_epoch, self._order = epoch, self._permutation(epoch)
        return self._order

    def __len__(self) -> int:
        return len(self.images) // self.batch_size  # full batches only: steady shapes

    def __getitem__(self, index: int) -> Batch:
        return self.batch(self.epoch, index)

    def batch(self, epoch: int, index: int) -> Batch:
        """Batch ``index`` of ``epoch``: a pure function of (seed, epoch, index)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (epoch has {len(self)} batches)")
        g = torch.Generator().manual_seed(batch_seed(self.seed, epoch, index))
        order = self._order_of(epoch)
        idx = np.sort(order[index * self.batch_size : (index + 1) * self.batch_size])
        clean = to_model_input(self.images[idx])
        images = self.augment(clean, g)
        masks = self.mask_generator.sample(self.batch_size, g)
        # Drawn last from the batch generator: turning the second view on or off leaves the
        # first view and the masks of every batch unchanged.
        second = self.augment(clean, g) if self.two_views else None
        per_rank = self.batch_size // self.world_size
        lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
        return Batch(
            images[lo:hi],
            slice_masks(masks, lo, hi),
            None if second is None else second[lo:hi],
        )


class EpochSpan(Dataset):
    """Epochs ``first`` to ``stop - 1`` of ``batches`` as one run of batches, epoch after epoch.

    One loader over the whole run starts its workers once and keeps building the next epoch's
    first batches while the last epoch ends (diagnostics, checkpoint); a loader per epoch
    would restart them, and the GPU would wait for their first batches every epoch."""

    def __init__(self, batches: PretrainBatches, first: int, stop: int) -> None:
        self.batches, self.first = batches, first
        self.count = max(0, stop - first) * len(batches)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < self.count:
            raise IndexError(f"batch {index} out of range (the span has {self.count} batches)")
        epoch, within = divmod(index, len(self.batches))
        return self.batches.batch(self.first + epoch, within)


def make_loader(
    batches: PretrainBatches | EpochSpan, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """A loader over whole batches (no re-batching); workers build images and masks, reading
    only their batch's rows of the (memory-mapped) split. ``pin_memory``: on CUDA, batches
    arrive in page-locked memory so ``Batch.to`` copies them without blocking."""
    return DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_whole_batch,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
