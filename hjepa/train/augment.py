"""Batched, seeded image augmentation for pretraining: random resized crop, horizontal flip,
horizontal shear and brightness.

Why batched affine resampling instead of per-image PIL transforms: one ``grid_sample`` call per
batch is fast on CPU and GPU, and drawing every random number from the batch's own
``torch.Generator`` makes a batch a pure function of its seed, which is what makes kill-and-resume
bitwise exact. The shear and the brightness draw their numbers only when they are on, so turning
them off leaves every batch (and every published number) exactly as it was.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hjepa.core.config import AugmentParams

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


class Augmenter:
    """Random resized crop (area fraction in ``crop_scale``, aspect 3/4..4/3), optional flip,
    horizontal shear by an angle drawn from ±``shear_deg`` (a font's slant: upright letters lean
    like italics), and a brightness gain drawn log-uniformly from [1 / (1 + ``brightness``),
    1 + ``brightness``].

    The gain scales each view's intensity above black (black stays black, brighter pixels clip at
    white): a dark and a light shirt are one class, and raw pixels cannot tell that. On
    Fashion-MNIST the recipe with it put the k-NN above pixels on the seeds it was chosen on,
    and level with them over six seeds (RESULTS.md, sessions 29–30)."""

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        hflip: bool = False,
        shear_deg: float = 0.0,
        brightness: float = 0.0,
    ) -> None:
        self.crop_scale = tuple(float(x) for x in crop_scale)
        self.hflip = bool(hflip)
        self.shear_deg = float(shear_deg)
        self.brightness = float(brightness)

    @classmethod
    def from_params(cls, params: AugmentParams) -> Augmenter:
        """From the ``train.augment`` section."""
        return cls(
            crop_scale=params.crop_scale,
            hflip=params.hflip,
            shear_deg=params.shear_deg,
            brightness=params.brightness,
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """images: float N×C×H×W in [-1, 1]. Returns augmented images of the same shape."""
        n = images.shape[0]
        lo, hi = self.crop_scale
        u = torch.rand(n, 5, generator=generator)
        area = lo + (hi - lo) * u[:, 0]
        log_ratio = _LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * u[:, 1]
        ratio = torch.exp(log_ratio)
        # Crop width/height as fractions of the image side; clip so the crop fits.
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (1 - w) * (2 * u[:, 2] - 1)  # centre in [-(1-w), 1-w] (normalised coordinates)
        cy = (1 - h) * (2 * u[:, 3] - 1)
        flip = torch.where(
            (u[:, 4] < 0.5) & torch.tensor(self.hflip), -torch.ones(n), torch.ones(n)
        )
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        if self.shear_deg > 0:
            # Input x moves with output y: each row is shifted, the columns lean by the angle.
            angle = (2 * torch.rand(n, generator=generator) - 1) * math.radians(self.shear_deg)
            theta[:, 0, 1] = h * torch.tan(angle)
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        if self.brightness > 0:
            span = math.log1p(self.brightness)
            gain = torch.exp((2 * torch.rand(n, generator=generator) - 1) * span)
            gain = gain.to(out.device, out.dtype).view(n, 1, 1, 1)
            out = ((out + 1) * gain - 1).clamp(-1, 1)  # [-1, 1]: -1 is black
        return out
