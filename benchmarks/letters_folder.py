"""Render the letters A–J in every installed font into an image folder: a glyph set of letters.

Why: issue 20 is judged on a held-out set of letters in many fonts (28 px grayscale, ~3,000
images) and the glyph recipes were tuned on digits and animal silhouettes only. Letters in
many typefaces (plain text faces next to decorative display faces, as in notMNIST) are a
different kind of glyph: one class spans shapes that share little ink. This script makes such a
set from font files already on the machine, so nothing is downloaded at run time. On Debian the
fonts of the measured set come from (one ``apt-get install``, ~1,000 font files):

    apt-get install fonts-aenigma fonts-urw-base35 fonts-texgyre fonts-freefont-ttf \\
        fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-gillius \\
        fonts-adf-ikarius fonts-adf-irianis fonts-adf-libris fonts-adf-mekanus \\
        fonts-adf-oldania fonts-adf-romande fonts-adf-solothurn fonts-adf-switzera \\
        fonts-adf-tribun fonts-adf-universalis fonts-adf-verana fonts-roboto-unhinted \\
        fonts-roboto-slab fonts-open-sans fonts-lato fonts-crosextra-carlito \\
        fonts-crosextra-caladea fonts-linuxlibertine fonts-ebgaramond fonts-cantarell \\
        fonts-comic-neue fonts-dkg-handwriting fonts-lobster fonts-lobstertwo fonts-oldstandard \\
        fonts-quicksand fonts-sil-charis fonts-sil-andika fonts-inconsolata fonts-jura \\
        fonts-cabin fonts-cabinsketch fonts-breip fonts-humor-sans fonts-kristi fonts-isabella \\
        fonts-f500 fonts-beteckna fonts-blankenburg fonts-goudybookletter fonts-ocr-a \\
        fonts-ocr-b fonts-bebas-neue fonts-dosis fonts-averia-gwf fonts-averia-sans-gwf \\
        fonts-averia-serif-gwf fonts-karla fonts-manrope fonts-play fonts-hack-ttf \\
        fonts-mononoki fonts-anonymous-pro fonts-fantasque-sans fonts-sixtyfour \\
        fonts-gotico-antiqua fonts-century-catalogue fonts-ecolier-court fonts-femkeklaver \\
        fonts-dejavu-extra fonts-league-spartan fonts-rufscript fonts-tomsontalks
    python benchmarks/letters_folder.py /usr/share/fonts /tmp/letters   # 300 fonts x 10
    python benchmarks/letters_folder.py /usr/share/fonts /tmp/letters_kt --letters KLMNOPQRST \
        --seed 1   # ten other capitals, another draw of fonts: the fonts recipe's held-out check

How each image is made: the capital letter is drawn at 96 pt, cropped to its ink, scaled to fit a
24×24 box (aspect kept) and centred on a black 28×28 canvas, white ink. A font is used only if its
character map has every letter drawn (``--letters``), every letter leaves ink, no two of its
letters look the same (a font that draws one placeholder box for every letter) and none of its
letters repeats an image already kept (the same face installed twice, e.g. as .otf and .ttf).
Symbol, dingbat and math faces are left out by name: their ``A`` is an alpha or a picture. From the
fonts that pass, ``--per-class`` are drawn with a seeded shuffle, so every class holds the same
fonts.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hjepa.core.errors import UserError  # noqa: E402

LETTERS = "ABCDEFGHIJ"
FONT_SUFFIXES = (".ttf", ".otf")
EXCLUDED = re.compile(r"symbol|dingbat|math|emoji|awesome|music|euterpe|icon|ornament", re.I)
SIZE = 28
BOX = 24
DRAW_PT = 96


def font_files(roots: list[Path]) -> list[Path]:
    """Every .ttf/.otf under ``roots``, sorted, minus symbol-like faces (module docstring)."""
    return sorted(
        p
        for root in roots
        for p in root.rglob("*")
        if p.suffix.lower() in FONT_SUFFIXES and p.is_file() and not EXCLUDED.search(p.name)
    )


def has_letters(path: Path, letters: str = LETTERS) -> bool:
    """Whether the font's character map maps every one of ``letters`` to a real glyph."""
    from fontTools.ttLib import TTFont, TTLibError

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # quirks of real fonts, not errors
    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, ValueError, AssertionError, KeyError):
        return False
    return all(cmap.get(ord(c), ".notdef") != ".notdef" for c in letters)


def render(font: ImageFont.FreeTypeFont, letter: str) -> np.ndarray | None:
    """The letter as a centred 28×28 uint8 image (white ink on black); None if it has no ink."""
    canvas = Image.new("L", (3 * DRAW_PT, 3 * DRAW_PT), 0)
    ImageDraw.Draw(canvas).text((DRAW_PT, DRAW_PT // 2), letter, fill=255, font=font)
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    ink = canvas.crop(bbox)
    scale = BOX / max(ink.size)
    w, h = max(1, round(ink.width * scale)), max(1, round(ink.height * scale))
    small = ink.resize((w, h), Image.Resampling.LANCZOS)
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(small, ((SIZE - w) // 2, (SIZE - h) // 2))
    pixels = np.asarray(out)
    return pixels if pixels.max() > 0 else None


def render_font(path: Path, letters: str = LETTERS) -> list[np.ndarray] | None:
    """The letters of one font, or None when the font fails a check (module docstring)."""
    if not has_letters(path, letters):
        return None
    try:
        font = ImageFont.truetype(str(path), DRAW_PT)
    except OSError:
        return None
    images = []
    for letter in letters:
        try:
            image = render(font, letter)
        except (OSError, ValueError):
            return None
        if image is None:
            return None
        images.append(image)
    if len({im.tobytes() for im in images}) < len(images):
        return None
    return images


def usable_fonts(roots: list[Path], letters: str = LETTERS) -> list[tuple[Path, list[np.ndarray]]]:
    """Fonts that pass every check, in path order, with their renders; repeats dropped."""
    seen: set[bytes] = set()
    kept = []
    for path in font_files(roots):
        images = render_font(path, letters)
        if images is None:
            continue
        pixels = [im.tobytes() for im in images]
        if any(p in seen for p in pixels):
            continue
        seen.update(pixels)
        kept.append((path, images))
    return kept


def check_letters(letters: str) -> None:
    """Refuse ``letters`` unless it names two or more distinct characters, each a folder name.

    Why: each character becomes a class folder, so a repeat would merge two classes' images and a
    path separator would write outside ``out``."""
    bad = any(c in "/\\." or not c.isprintable() or c.isspace() for c in letters)
    if len(letters) < 2 or len(set(letters)) < len(letters) or bad:
        raise UserError(
            f"--letters {letters!r}: give two or more distinct printable characters, none of "
            f"'/', '\\', '.' or spaces (e.g. {LETTERS}, or KLMNOPQRST for another ten capitals)"
        )


def convert(
    roots: list[Path], out: Path, per_class: int = 300, seed: int = 0, letters: str = LETTERS
) -> tuple[int, int]:
    """Write ``out/<letter>/<font index>.png`` for ``per_class`` fonts drawn from the usable ones;
    returns (images written, usable fonts found)."""
    check_letters(letters)
    fonts = usable_fonts(roots, letters)
    if len(fonts) < per_class:
        raise UserError(
            f"{', '.join(map(str, roots))}: {len(fonts)} usable fonts, --per-class {per_class} "
            f"needs that many (install more font packages, see benchmarks/letters_folder.py, or "
            f"lower --per-class)"
        )
    chosen = sorted(random.Random(seed).sample(range(len(fonts)), per_class))
    for letter in letters:
        (out / letter).mkdir(parents=True, exist_ok=True)
    width = len(str(per_class - 1))
    for rank, index in enumerate(chosen):
        for letter, image in zip(letters, fonts[index][1], strict=True):
            Image.fromarray(image).save(out / letter / f"{rank:0{width}d}.png")
    return per_class * len(letters), len(fonts)


def is_rendered(folder: Path) -> bool:
    """Whether ``folder`` is a set this script wrote: two or more class folders of .png images.

    Why: a benchmark given a folder must tell a rendered set (of any ``--letters``) from a tree
    of font files, whose subfolders hold .ttf/.otf files and no images."""
    classes = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return len(classes) >= 2 and all(any(c.glob("*.png")) for c in classes)


def set_digest(out: Path) -> str:
    """A short SHA-256 of the rendered set (every letter folder's images in name order, as pixels).

    Why: the set is drawn from whatever fonts are installed, so two machines with other font
    packages (or other versions of them) draw other faces; results on the set should name it."""
    digest = hashlib.sha256()
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.png")):
            digest.update(f"{folder.name}/{path.name}".encode())
            digest.update(np.asarray(Image.open(path)).tobytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fonts", type=Path, nargs="+", help="folders searched for .ttf/.otf")
    parser.add_argument("out", type=Path, help="image folder to create (one folder per letter)")
    parser.add_argument("--per-class", type=int, default=300, help="fonts drawn (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--letters",
        default=LETTERS,
        help=f"characters drawn, one class folder each (default {LETTERS}; another glyph set of "
        "the same kind, e.g. KLMNOPQRST, checks a recipe on classes it was not chosen on)",
    )
    args = parser.parse_args(argv)
    try:
        n, usable = convert(
            args.fonts, args.out, per_class=args.per_class, seed=args.seed, letters=args.letters
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {n} images ({args.per_class} of {usable} usable fonts x {len(args.letters)} "
        f"letters) "
        f"to {args.out}; set digest {set_digest(args.out)} (other installed fonts, another set)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
