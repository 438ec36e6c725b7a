"""Dataset ``font-glyphs``: characters rendered from the fonts of Debian font packages — a
character a class, a font an instance, as Omniglot has a character a class and a drawer an
instance. Many classes (132: Latin, digits, Greek, Cyrillic, look-alikes left out), so a one-shot
generator can learn from 102 base classes what a class is and be tested on 30 it never saw.

The split is published in ``font_glyphs/``: ``classes.tsv`` (the characters, base or novel) and
``fonts.tsv`` (the font files, their Debian packages and licences, train or test), written once by
``scripts/make-font-glyph-split.py``. Rendering is deterministic for given font files and Pillow:
each glyph drawn white on black at one fixed font size (so case and size differences stay),
centred on its ink box on a 4x canvas, then box-averaged down to ``resolution``.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import memcore
from memcore import option, positive
from memcore_datasets.images import ImageOptions, TensorImageDataset, cache_dir, finish

SPLIT_DIR = Path(__file__).resolve().parent / "font_glyphs"
INSTALL = "make install (it runs .ci/install-fonts), or: apt-get install"


def read_table(name: str) -> list[dict]:
    with open(SPLIT_DIR / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def class_table() -> list[dict]:
    return read_table("classes.tsv")


def font_table() -> list[dict]:
    return read_table("fonts.tsv")


def base_classes() -> list[int]:
    return [int(row["index"]) for row in class_table() if row["split"] == "base"]


def check_fonts(fonts: list[dict]) -> None:
    """A clear error naming the packages to install when any listed font file is missing."""
    missing = [row for row in fonts if not Path(row["path"]).is_file()]
    if missing:
        packages = sorted({row["package"] for row in missing})
        raise memcore.MemcoreError(
            f"dataset 'font-glyphs': {len(missing)} of its {len(fonts)} font files are missing "
            f"(first: {missing[0]['path']}, from {missing[0]['package']}); install them with "
            f"{INSTALL} {' '.join(packages)}")


SCALE, EM = 4, 0.75          # drawn on a 4x canvas; the font size 0.75 of the side


def render(path: str, chars: list[str], side: int) -> np.ndarray:
    """(len(chars), side, side) uint8: each character of one font, centred, white on black."""
    from PIL import Image, ImageDraw, ImageFont
    canvas = side * SCALE
    font = ImageFont.truetype(path, size=round(canvas * EM))
    out = np.zeros((len(chars), side, side), dtype=np.uint8)
    for i, ch in enumerate(chars):
        image = Image.new("L", (canvas, canvas), 0)
        draw = ImageDraw.Draw(image)
        left, top, right, bottom = draw.textbbox((0, 0), ch, font=font)
        draw.text(((canvas - left - right) / 2, (canvas - top - bottom) / 2), ch, fill=255,
                  font=font)
        out[i] = np.asarray(image.reduce(SCALE))
    return out


def rendered(fonts: list[dict], chars: list[str], side: int) -> np.ndarray:
    """(fonts, chars, side, side) uint8, cached as a plain .npy keyed by the split files, the font
    files' sizes and the Pillow version (rendering 15,000 glyphs takes a while)."""
    import PIL
    key = hashlib.sha256(repr((side, SCALE, EM, chars, [(r["path"], Path(r["path"]).stat().st_size)
                                             for r in fonts], PIL.__version__)).encode())
    path = cache_dir() / "font-glyphs" / f"{key.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    glyphs = np.stack([render(row["path"], chars, side) for row in fonts])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, glyphs, allow_pickle=False)
    partial.replace(path)
    return glyphs


@memcore.config
class FontGlyphOptions(ImageOptions):
    split: Literal["train", "test", "all"] = option(
        "train", help="Fonts: 'train' (two thirds, fonts.tsv), 'test' (the other third), 'all'.")
    side: int = option(32, help="Rendered side in pixels, before data.resolution.", check=positive)


def font_glyphs(options: FontGlyphOptions, ctx) -> TensorImageDataset:
    classes = class_table()
    fonts = [row for row in font_table() if options.split in ("all", row["split"])]
    check_fonts(fonts)
    chars = [row["char"] for row in classes]
    glyphs = torch.from_numpy(rendered(fonts, chars, options.side))       # (F, C, s, s)
    images = glyphs.flatten(0, 1)                                          # font-major
    labels = torch.arange(len(chars)).repeat(len(fonts))
    names = [f"{row['char']} {row['codepoint']}" for row in classes]
    return finish(images, labels, options, names,
                                   f"font-glyphs {options.split}: {len(chars)} characters x "
                                   f"{len(fonts)} fonts")
