"""benchmarks/letters_folder.py: the letters set renders A–J from real font files into a balanced
28×28 image folder and keeps out what would be label noise (placeholder glyphs, the same face
twice, symbol faces). matplotlib ships the fonts used here."""

from __future__ import annotations

import shutil
from pathlib import Path

import letters_folder  # noqa: E402
import matplotlib
import numpy as np
import pytest
import quality_sets  # noqa: E402
from PIL import Image

from hjepa.core.errors import UserError

MPL_FONTS = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"


def _fonts(tmp_path: Path, *names: str, rename: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "fonts"
    folder.mkdir(exist_ok=True)
    for name in names:
        target = (rename or {}).get(name, name)
        shutil.copy(MPL_FONTS / name, folder / target)
    return folder


def test_renders_a_balanced_seeded_folder_of_centred_28px_letters(tmp_path, capsys):
    fonts = _fonts(
        tmp_path, "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf", "cmr10.ttf"
    )
    out = tmp_path / "out"
    assert letters_folder.main([str(fonts), str(out), "--per-class", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 of 4 usable fonts" in printed
    assert f"set digest {letters_folder.set_digest(out)}" in printed
    assert sorted(p.name for p in out.iterdir()) == list("ABCDEFGHIJ")
    images = {}
    for letter in "ABCDEFGHIJ":
        files = sorted((out / letter).iterdir())
        assert [f.name for f in files] == ["0.png", "1.png", "2.png"]
        for f in files:
            pixels = np.asarray(Image.open(f))
            assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
            assert pixels.max() > 200  # white ink
            # Centred in a 24-px box: a 2-px black frame at least.
            assert pixels[:2].max() == pixels[-2:].max() == 0
            assert pixels[:, :2].max() == pixels[:, -2:].max() == 0
            images[(letter, f.name)] = pixels.tobytes()
    assert len(set(images.values())) == 30
    # Same seed, same fonts drawn; another seed draws another three of the four.
    letters_folder.main([str(fonts), str(tmp_path / "again"), "--per-class", "3"])
    assert (tmp_path / "again/A/1.png").read_bytes() == (out / "A/1.png").read_bytes()
    assert letters_folder.set_digest(tmp_path / "again") == letters_folder.set_digest(out)
    picks, digests = set(), set()
    for seed in range(6):
        folder = tmp_path / f"s{seed}"
        letters_folder.convert([fonts], folder, per_class=3, seed=seed)
        picks.add(tuple((folder / "B" / f"{i}.png").read_bytes() for i in range(3)))
        digests.add(letters_folder.set_digest(folder))
    assert len(picks) > 1
    assert len(digests) == len(picks)  # another draw of fonts, another digest


def test_placeholder_repeated_and_symbol_faces_are_left_out(tmp_path):
    fonts = _fonts(
        tmp_path,
        "DejaVuSans.ttf",
        "DejaVuSerif.ttf",
        "LastResortHE-Regular.ttf",  # maps every letter to one placeholder glyph
        "STIXSizOneSymReg.ttf",  # no capital letters in its character map
        rename={"DejaVuSerif.ttf": "Serif.ttf"},
    )
    shutil.copy(MPL_FONTS / "DejaVuSans.ttf", fonts / "DejaVuSans-copy.ttf")  # the same face twice
    shutil.copy(MPL_FONTS / "DejaVuSerif-Bold.ttf", fonts / "StandardSymbolsPS.ttf")
    (fonts / "broken.ttf").write_bytes(b"not a font")
    assert "StandardSymbolsPS.ttf" not in [p.name for p in letters_folder.font_files([fonts])]
    kept = [path.name for path, _ in letters_folder.usable_fonts([fonts])]
    assert kept == ["DejaVuSans-copy.ttf", "Serif.ttf"]


def test_too_few_fonts_names_the_count_and_the_way_out(tmp_path):
    fonts = _fonts(tmp_path, "DejaVuSans.ttf")
    with pytest.raises(UserError, match="1 usable fonts, --per-class 2 needs that many"):
        letters_folder.convert([fonts], tmp_path / "out", per_class=2)
    assert letters_folder.main([str(fonts), str(tmp_path / "o"), "--per-class", "2"]) == 2


def test_the_menu_renders_fonts_or_takes_a_rendered_folder(tmp_path):
    rendered = tmp_path / "rendered"
    letters_folder.convert([MPL_FONTS], rendered, per_class=2)
    qs, path = quality_sets.parse_dataset(f"letters={rendered}")
    assert qs.source == "image_folder" and qs.overrides == {}
    assert qs.materialise(path, tmp_path / "work") == str(rendered)
    # Given fonts, the menu renders 300 faces per letter: four are not enough, and it says so.
    fonts = _fonts(tmp_path, "DejaVuSans.ttf", "DejaVuSerif.ttf", "cmr10.ttf", "cmtt10.ttf")
    qs, path = quality_sets.parse_dataset(f"letters={fonts}")
    with pytest.raises(UserError, match="4 usable fonts, --per-class 300"):
        qs.materialise(path, tmp_path / "work")


def test_another_set_of_letters_is_its_own_class_folders_and_the_menu_takes_it(tmp_path, capsys):
    fonts = _fonts(tmp_path, "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf")
    out = tmp_path / "kt"
    argv = [str(fonts), str(out), "--per-class", "2", "--letters", "KLMNOPQRST"]
    assert letters_folder.main(argv) == 0
    assert "2 of 3 usable fonts x 10 letters" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == list("KLMNOPQRST")
    default = tmp_path / "aj"
    letters_folder.convert([fonts], default, per_class=2)
    # Other classes, other pictures, another digest: the set is not A–J relabelled.
    assert (out / "K/0.png").read_bytes() != (default / "A/0.png").read_bytes()
    assert letters_folder.set_digest(out) != letters_folder.set_digest(default)
    assert letters_folder.is_rendered(out) and letters_folder.is_rendered(default)
    assert not letters_folder.is_rendered(fonts) and not letters_folder.is_rendered(tmp_path)
    qs, path = quality_sets.parse_dataset(f"letters={out}")
    assert qs.materialise(path, tmp_path / "work") == str(out)  # used as it is, not re-rendered


@pytest.mark.parametrize("letters", ["A", "ABA", "AB/", "A B", "A.B"])
def test_letters_that_cannot_be_distinct_class_folders_are_refused(tmp_path, capsys, letters):
    fonts = _fonts(tmp_path, "DejaVuSans.ttf")
    assert letters_folder.main([str(fonts), str(tmp_path / "o"), "--letters", letters]) == 2
    err = capsys.readouterr().err
    assert f"--letters {letters!r}" in err and "distinct printable characters" in err
    assert not (tmp_path / "o").exists()  # refused before anything is written
