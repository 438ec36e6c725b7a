"""The font-glyphs dataset: its published split files, the recipes that use them, deterministic
rendering, and a clear error when fonts are missing."""
from pathlib import Path

import numpy as np
import pytest

import memcore
from memcore.recipe import load_recipe
from memcore_mfh import fonts

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_split_files_are_the_many_class_regime():
    classes, table = fonts.class_table(), fonts.font_table()
    chars = [row["char"] for row in classes]
    assert len(set(chars)) == len(chars) and [int(r["index"]) for r in classes] == \
        list(range(len(chars)))
    assert all(f"U+{ord(r['char']):04X}" == r["codepoint"] for r in classes)
    base, novel = fonts.base_classes(), [r for r in classes if r["split"] == "novel"]
    assert len(base) >= 100 and len(novel) >= 20
    assert len(table) >= 20 and len({r["path"] for r in table}) == len(table)
    assert all(r["package"].startswith("fonts-") and r["licence"] for r in table)
    for split in ("train", "test"):                      # >= 20 instances a class over both
        assert sum(r["split"] == split for r in table) >= 10


@pytest.mark.parametrize("recipe", ["mfh-font-glyphs.toml"])
def test_recipe_trains_on_the_published_base_classes(recipe):
    data = load_recipe(RECIPES / recipe)[1]["data"]
    assert data["kind"] == "font-glyphs" and data["classes"] == fonts.base_classes()


def test_fashion_relatives_split():
    data = load_recipe(RECIPES / "mfh-fashion-relatives.toml")[1]["data"]
    assert data["classes"] == [0, 1, 3, 4, 5, 7, 8]     # novel: pullover, shirt, ankle boot


def test_missing_fonts_name_the_packages(monkeypatch):
    rows = [{"path": "/nonexistent/Font.ttf", "package": "fonts-example", "licence": "x",
             "split": "train"}]
    with pytest.raises(memcore.MemcoreError, match="apt-get install fonts-example"):
        fonts.check_fonts(rows)


def test_rendering_is_deterministic_and_centred():
    present = [r for r in fonts.font_table() if Path(r["path"]).is_file()]
    if not present:
        pytest.skip("no font of the split is installed (make install installs them)")
    a = fonts.render(present[0]["path"], ["A", "o", "Ж"], 16)
    b = fonts.render(present[0]["path"], ["A", "o", "Ж"], 16)
    assert a.dtype == np.uint8 and a.shape == (3, 16, 16) and np.array_equal(a, b)
    for glyph in a:
        ys, xs = np.nonzero(glyph > 64)
        assert abs(xs.mean() - 7.5) < 2.5 and abs(ys.mean() - 7.5) < 2.5
    assert (a[1] > 64).sum() < (a[2] > 64).sum()        # one font size: 'o' smaller than 'Ж'
