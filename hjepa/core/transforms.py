"""The one conversion from stored uint8 images to model input, shared by pretraining and probe.

Keeping it in one place means the probe sees exactly the pixel scaling the encoder was trained on.
"""

from __future__ import annotations

import numpy as np
import torch

MEAN = 0.5
STD = 0.5


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×C (numpy or tensor) → float32 N×C×H×W, scaled to [0, 1] then (x − 0.5) / 0.5."""
    if isinstance(images, np.ndarray):
        # Memory-mapped splits are read-only; torch needs a writable buffer.
        array = images if images.flags.writeable else np.array(images)
        t = torch.from_numpy(array)
    else:
        t = images
    if t.dtype != torch.uint8 or t.ndim != 4:
        raise ValueError(
            f"expected uint8 N×H×W×C images, got {t.dtype} with shape {tuple(t.shape)}"
        )
    x = t.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    return x.sub_(MEAN).div_(STD).contiguous()
