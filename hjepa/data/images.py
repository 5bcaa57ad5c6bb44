"""Decoding one image file safely and turning any image into the stored form (uint8 H×W×C).

Why one function for every source: digits, image folders and CIFAR-10 must all go through the
same resize and colour conversion, so that switching ``data.source`` changes the data and not
the preprocessing.

Hostile files are refused with their path named, never half-handled:
- only regular files are opened: a FIFO, socket or device (even one named ``x.png``) is refused
  from its ``stat``, and the open itself is non-blocking and re-checked with ``fstat``, so a file
  swapped for a FIFO after the folder was listed cannot hang the stage either;
- images over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` pixels) are refused
  before their pixels are decoded;
- 32-bit integer ("I") and float ("F") images have no agreed white level, so each is scaled from
  its own minimum (black) to its maximum (white); a constant image becomes black, and a float
  image with NaN or infinite values is refused. (16-bit images keep their full range: /257.)
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hjepa.core.errors import UserError

# What PIL is allowed to decode from an image folder (anything else is "not an image").
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def special_file_kind(mode: int) -> str | None:
    """What a non-regular, non-folder ``st_mode`` is, in words; None for a file or a folder."""
    kinds = [
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    for test, kind in kinds:
        if test(mode):
            return kind
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "not a regular file"


def refuse_special(path: Path, kind: str) -> UserError:
    return UserError(
        f"{path}: {kind}, not an image file; prepare never opens special files. Remove it from "
        "the image folder"
    )


def open_image(path: Path) -> Image.Image:
    """Fully decode the regular file ``path``; a special file, non-image, unsupported, truncated
    or oversized file is a UserError naming it.

    ``load()`` is called here so that truncation is found now, not later in a resize.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without waiting
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror}); fix or remove it") from None
    with os.fdopen(fd, "rb") as handle:
        kind = special_file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise refuse_special(path, kind)
        return _decode(handle, path)


def _decode(handle: object, path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(handle, formats=IMAGE_FORMATS)  # type: ignore[arg-type]
            image.load()
    except UnidentifiedImageError:
        raise UserError(
            f"{path}: not a readable image (allowed formats: {', '.join(IMAGE_FORMATS)}); "
            "remove it from the image folder"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(
            f"{path}: too large to decode safely ({exc}); the limit is "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels (PIL's decompression-bomb guard). Shrink the "
            "image or remove it"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(
            f"{path}: corrupt or truncated image ({exc}); replace or remove it"
        ) from None
    return image


def wide_to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """A 32-bit integer or float image min–max scaled to 8-bit "L" (see module docstring);
    other images unchanged."""
    if image.mode not in ("I", "F"):
        return image
    wide = np.asarray(image, dtype=np.float64)
    if not np.isfinite(wide).all():
        raise UserError(
            f"{path}: float image with NaN or infinite pixel values; only finite values can be "
            "scaled to 8 bit. Fix or remove it"
        )
    low, high = float(wide.min()), float(wide.max())
    scaled = (wide - low) * (255.0 / (high - low)) if high > low else np.zeros_like(wide)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


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


def decode_file(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file in stored form (everything an image-folder worker does per file)."""
    with open_image(path) as image:
        return to_stored(wide_to_8bit(image, path), size, channels)


def image_hash(array: np.ndarray) -> str:
    """sha256 hex digest of the stored image bytes (what the leakage check compares)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
