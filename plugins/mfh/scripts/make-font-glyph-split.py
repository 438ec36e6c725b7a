#!/usr/bin/env python3
"""Write the published font-glyphs split (run once by a maintainer; the files are committed):

* ``memcore_mfh/font_glyphs/classes.tsv``: one character a class, with its script and whether it
  is a base class (trained on) or a novel one (30 drawn with random.Random(0));
* ``memcore_mfh/font_glyphs/fonts.tsv``: one font file an instance, the Debian package it comes
  from, the package's font licence and the font's split (every third font, in path order, is
  ``test``).

A font is kept when its cmap covers every character (fontTools, needed only here) and its file
is not a second format of a font already kept (urw-base35 ships .otf and .t1 of each).
    python plugins/mfh/scripts/make-font-glyph-split.py
"""
import random
import subprocess
from pathlib import Path

from fontTools.ttLib import TTFont

OUT = Path(__file__).resolve().parents[1] / "memcore_mfh" / "font_glyphs"
# package -> licence of its font files, as its /usr/share/doc/PACKAGE/copyright states it
PACKAGES = {
    "fonts-dejavu-core": "Bitstream Vera licence (DejaVu changes public domain)",
    "fonts-dejavu-extra": "Bitstream Vera licence (DejaVu changes public domain)",
    "fonts-liberation2": "SIL OFL 1.1",
    "fonts-freefont-ttf": "GPL-3+ with font exception",
    "fonts-croscore": "SIL OFL 1.1",
    "fonts-urw-base35": "AGPL-3 with font exception",
    "fonts-ebgaramond": "SIL OFL 1.1",
    "fonts-linuxlibertine": "GPL-2+ with font exception, or SIL OFL 1.1",
    "fonts-open-sans": "Apache-2.0",
}
# Letters that look like a letter already in the set (Latin l / I / 1; Greek ι ν ο υ; Cyrillic
# Г П Ф ф, the Greek Γ Π Φ φ; Cyrillic А В Е ... are Latin look-alikes and never listed) are left out.
SCRIPTS = {
    "latin": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
    "digit": "0123456789",
    "greek": "ΓΔΘΛΞΠΣΦΨΩαβγδεζηθκλμξπρσςτφχψω",
    "cyrillic": "БДЖЗИЙЛЦЧШЩЪЫЬЭЮЯбвгджзийлмнптцчшщъыьэюя",
}
NOVEL = 30


def main():
    chars = [(c, script) for script, text in SCRIPTS.items() for c in text]
    novel = set(random.Random(0).sample(range(len(chars)), NOVEL))
    fonts, seen = [], set()
    for package, licence in PACKAGES.items():
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                               check=True).stdout.split()
        for path in sorted(f for f in files if f.endswith((".ttf", ".otf"))):
            cmap = TTFont(path, fontNumber=0).getBestCmap() or {}
            name = Path(path).stem
            if all(ord(c) in cmap for c, _ in chars) and name not in seen:
                seen.add(name)
                fonts.append((path, package, licence))
    fonts.sort()
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "classes.tsv", "w") as f:
        f.write("index\tcodepoint\tchar\tscript\tsplit\n")
        for i, (c, script) in enumerate(chars):
            f.write(f"{i}\tU+{ord(c):04X}\t{c}\t{script}\t{'novel' if i in novel else 'base'}\n")
    with open(OUT / "fonts.tsv", "w") as f:
        f.write("path\tpackage\tlicence\tsplit\n")
        for i, (path, package, licence) in enumerate(fonts):
            f.write(f"{path}\t{package}\t{licence}\t{'test' if i % 3 == 2 else 'train'}\n")
    print(f"{len(chars)} classes ({len(chars) - NOVEL} base, {NOVEL} novel), {len(fonts)} fonts")


if __name__ == "__main__":
    main()
