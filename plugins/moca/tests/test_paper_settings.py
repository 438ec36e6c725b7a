"""The paper's values (shared/papers/moca.txt, with the section each comes from) against the
resolved paper recipes, the authors' FastGAN scripts against the recipe that claims them, and every
paper-scale recipe passing `memcore validate` (networks built) without its data."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from memcore.cli import main
from memcore.recipe import load_recipe
from memcore_moca.moca import MocaOptions

RECIPES = Path(__file__).parents[1] / "recipes"
PAPER = RECIPES / "paper"

# the block as the paper describes it: option -> (value, where the paper says so)
PAPER_BLOCK = {
    "paths": ("both", "§4.4: H = H_m ⊕ H_s, memory and self-attention"),
    "softmax": ("separate", "§4.2-4.4, Algorithm 1: β over the T prototypes, Ŝ over positions"),
    "routing": ("euclidean", "§4.1-4.2: i = argmin_j ||K_j - a||_2 for reads and writes"),
    "slot_momentum": (1.0, "§4.1: a written column replaces one random prototype"),
    "key_update": ("g-step", "§4.1, Algorithm 1: φ̃ <- m·φ̃ + (1-m)·φ after φ changed"),
    "momentum": (0.999, "§4.1: the text's value of m"),
    "cells": (32, "Table 6: best row, 32 clusters"),
    "prototypes": (256, "Table 6: best row, 256 per cluster"),
}

# recipe -> {key path: (value, source)}; blocks[0] is the recipe's one attention block
TABLES = {
    "fastgan-256": {"generator.kind": ("fastgan", "§5.3"), "augment.kind": ("diffaugment", "§5.3"),
                    "data.resolution": (256, "§5.1"), "generator.blocks": ([], "Table 1")},
    "moca-fastgan-256": {"generator.kind": ("fastgan", "§5.3"),
                         "augment.kind": ("diffaugment", "§5.3"), "data.resolution": (256, "§5.1")},
    "sa-fastgan-256": {"generator.blocks.0.paths": ("sa", "Table 3, SA-FastGAN"),
                       "data.resolution": (256, "§5.1")},
    "table4-moca-no-momentum": {"generator.blocks.0.momentum": (0.0, "Table 4, w/o momentum")},
    "stylegan2-256": {"generator.kind": ("stylegan2", "§5.3"), "augment.kind": ("ada", "§5.3"),
                      "data.resolution": (256, "§5.1"), "generator.blocks": ([], "Table 2")},
    "moca-stylegan2-256": {"augment.kind": ("ada", "§5.3"), "data.resolution": (256, "§5.1")},
    "sa-stylegan2-256": {"generator.blocks.0.paths": ("sa", "Table 3, SA-StyleGAN2")},
    "stylegan2-64": {"data.resolution": (64, "§5.1: ImageNet-100, COCO-300 at 64 px"),
                     "generator.blocks": ([], "Table 2")},
    "moca-stylegan2-64": {"data.resolution": (64, "§5.1")},
    "sa-stylegan2-64": {"data.resolution": (64, "§5.1"),
                        "generator.blocks.0.paths": ("sa", "Table 3")},
    "table8-lsgan": {"losses.0.kind": ("least-squares", "Table 8, LS-GAN"),
                     "augment.kind": ("diffaugment", "Table 8, DiffAug")},
    "table8-moca-lsgan": {"losses.0.kind": ("least-squares", "Table 8"),
                          "augment.kind": ("diffaugment", "Table 8")},
    "table8-fastgan": {"generator.kind": ("fastgan", "Table 8"),
                       "augment.kind": ("diffaugment", "Table 8")},
    "table8-moca-fastgan": {"augment.kind": ("diffaugment", "Table 8")},
    "table8-stylegan2": {"generator.kind": ("stylegan2", "Table 8"), "augment.kind": ("ada", "Table 8")},
    "table8-moca-stylegan2": {"augment.kind": ("ada", "Table 8")},
    **{f"table6-{c}x{t}": {"generator.kind": ("stylegan2", "Table 6 (CIFAR-10, MoCA-StyleGAN2)"),
                           "data.kind": ("cifar10", "Table 6"),
                           "generator.blocks.0.cells": (c, f"Table 6, {c} clusters"),
                           "generator.blocks.0.prototypes": (t, f"Table 6, size {t}")}
       for c, t in [(1, 512), (1, 8192), (3, 256), (20, 256), (20, 1024), (32, 256)]},
}
# the memory values a row varies on purpose (Tables 4 and 6)
ABLATED = {"table4-moca-no-momentum": {"momentum"},
           **{name: {"cells", "prototypes"} for name in TABLES if name.startswith("table6-")}}

# the authors' FastGAN-fork scripts (reference-code.md §1.2, §1.6, §1.7) vs moca-fastgan-folder
CODE = {"generator.blocks.0.at": 64, "generator.blocks.0.dim": 128,
        "generator.blocks.0.cells": 10, "generator.blocks.0.prototypes": 100,
        "generator.blocks.0.momentum": 0.6, "generator.blocks.0.key_update": "forward",
        "generator.blocks.0.slot_momentum": 1.0, "generator.blocks.0.routing": "fastgan-code",
        "generator.blocks.0.softmax": "separate", "generator.blocks.0.warmup": 2000,
        "generator.noise": False, "generator.output": "none", "generator.z_dim": 256,
        "train.batch_size": 8, "train.steps": 100000, "data.resolution": 256,
        "augment.policy": ["color", "translation"]}


def value_at(resolved, path):
    node = resolved
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return node


def resolved(name):
    recipe = load_recipe(PAPER / f"{name}.toml")[1]
    recipe["generator"].setdefault("blocks", [])      # the resolved dict leaves out an empty list
    return recipe


def test_every_paper_recipe_is_in_the_table():
    assert sorted(p.stem for p in PAPER.glob("*.toml")) == sorted(TABLES)


def test_block_defaults_are_the_papers():
    defaults = MocaOptions(at=4)
    for option, (value, section) in PAPER_BLOCK.items():
        assert getattr(defaults, option) == value, f"{option}: {section}"


@pytest.mark.parametrize("name", sorted(TABLES))
def test_paper_recipe_values(name):
    recipe = resolved(name)
    for path, (value, section) in TABLES[name].items():
        assert value_at(recipe, path) == value, f"{name}: {path} ({section})"
    for block in recipe["generator"]["blocks"]:
        if block["kind"] != "moca" or block["paths"] == "sa":
            continue
        for option, (value, section) in PAPER_BLOCK.items():
            if option not in ABLATED.get(name, ()):
                assert block[option] == value, f"{name}: {option} ({section})"


def test_code_recipe_follows_the_authors_scripts():
    recipe = load_recipe(RECIPES / "moca-fastgan-folder.toml")[1]
    for path, value in CODE.items():
        assert value_at(recipe, path) == value, path


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.toml")) + [RECIPES / "moca-fastgan-folder.toml",
                                                                  RECIPES / "sa-fastgan-folder.toml"],
                         ids=lambda p: p.stem)
def test_paper_scale_recipe_header_names_its_source(path):
    header = path.read_text().split("\nextends", 1)[0].split("\n[", 1)[0]
    assert header.startswith("# ") and "shared/" in header and "Not run here" in header


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    gen = torch.Generator().manual_seed(0)
    for i in range(64):  # the recipes' largest batch
        pixels = torch.randint(0, 256, (8, 8, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return folder


def validation_cases():
    """FastGAN recipes take 10-30 s each to validate (spectral norm's power iteration on the meta
    device), so they run with the slow tests; test_recipes.py trains a FastGAN with MoCA quickly."""
    for name in sorted(TABLES):
        slow = value_at(resolved(name), "generator.kind") == "fastgan"
        yield pytest.param(name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name", list(validation_cases()))
def test_paper_recipe_validates(name, photos, capsys):
    """`memcore validate` builds every network and block of the recipe; the data is a stand-in
    folder (the recipes' datasets are not on this machine) and the Inception metrics are dropped
    (their weights neither)."""
    data = value_at(resolved(name), "data")
    stand_in = f'data={{kind="image-folder", path="{photos}", resolution={data.get("resolution") or 32}}}'
    assert main(["validate", str(PAPER / f"{name}.toml"), "--set", stand_in,
                 "--set", "metrics=[]"]) == 0, capsys.readouterr().err
