"""Decoding one image file and turning any image into the stored form (uint8 H×W×C).

Why one function for every source: digits, image folders and CIFAR-10 must all go through the
same resize and colour conversion, so that switching ``data.source`` changes the data and not
the preprocessing.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hjepa.core.errors import UserError

# What PIL is allowed to decode from an image folder (anything else is "not an image").
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def open_image(path: Path) -> Image.Image:
    """Fully decode ``path``; a non-image, unsupported or truncated file is a UserError naming it.

    ``load()`` is called here so that truncation is found now, not later in a resize.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path, formats=IMAGE_FORMATS)
            image.load()
    except UnidentifiedImageError:
        raise UserError(
            f"{path}: not a readable image (allowed formats: {', '.join(IMAGE_FORMATS)}); "
            "remove it from the image folder"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise UserError(
            f"{path}: corrupt or truncated image ({exc}); replace or remove it"
        ) from None
    return image


def to_stored(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Resize to ``size``×``size`` (bilinear, antialiased when shrinking; aspect ratio is not
    kept) and convert to grayscale ("L", ``channels=1``) or RGB (``channels=3``).

    Returns a C-contiguous uint8 array of shape size×size×channels.
    """
    mode = "L" if channels == 1 else "RGB"
    if image.mode.startswith("I;16"):
        # 16-bit grayscale: keep the full range (PIL's own conversion would clip at 255).
        wide = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))
    if image.mode != mode:
        if image.mode in ("P", "PA", "LA"):
            image = image.convert("RGBA")  # palette/alpha: resolve colours before dropping alpha
        image = image.convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(array.reshape(size, size, channels))


def image_hash(array: np.ndarray) -> str:
    """sha256 hex digest of the stored image bytes (what the leakage check compares)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
