"""The paper-scale MFH recipes against the values of Xie et al. (CVPR 2022), each with the section it
comes from, so that a recipe cannot drift from the paper silently."""
import random
from pathlib import Path

import numpy as np
from PIL import Image

from memcore.cli import main
from memcore.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PAPER_SCALE = ["mfh-animal-faces", "mfh-nabirds", "mfh-flowers"]

# (key path, value, source) shared by every paper-scale recipe
PAPER = [
    ("optim.G.lr", 1e-4, "sec. 4 Implementation: Adam lr 0.0001"),
    ("optim.D.lr", 1e-4, "sec. 4 Implementation: Adam lr 0.0001 for all methods"),
    ("optim.G.betas", [0.001, 0.999], "sec. 4 Implementation: beta1 = 0.001, beta2 = 0.999"),
    ("optim.D.betas", [0.001, 0.999], "sec. 4 Implementation"),
    ("ema.decay", 0.999, "sec. 4: historical average with update weight 0.001"),
    ("ema.start", 0, "sec. 4: the final generator is the historical average"),
    ("train.steps", 150000, "sec. 4: 150,000 iterations"),
    ("train.batch_size", 64, "sec. 4: 64 content images per batch"),
    ("data.resolution", 128, "sec. 4: 128x128"),
    ("data.labels", True, "sec. 3: E_cr averages per class; D is conditional"),
    ("generator.memory_slots", 50, "sec. 4: memory size 50 for both datasets"),
    ("generator.switch_at", 32, "sec. 3.2: f_ci below 32x32, f_cr from 32x32"),
    ("generator.addressing", "gumbel", "sec. 3.1 eq. 3: addresser R with Gumbel-softmax"),
    ("generator.train_cr", "image", "Algorithm 1 line 2: f_cr = E_cr(x_i)"),
    ("losses.0.kind", "mfh-adversarial", "eq. 6-7: the conditional GAN loss with classification"),
    ("losses.1.kind", "mfh-reconstruction", "eq. 8: L_R"),
    ("losses.2.kind", "mfh-diversity", "eq. 9 / Algorithm 1: L_ds"),
    ("losses.3.kind", "mfh-balance", "eq. 10: L_cb"),
]
# (classes in the dataset, base classes, source)
SPLITS = {
    "mfh-animal-faces": (149, 119, "sec. 4: 149 classes, 119 seen / 30 unseen"),
    "mfh-nabirds": (555, 416, "sec. 4: 555 categories, train:test = 3:1"),
    "mfh-flowers": (102, 85, "LoFGAN protocol (reference-code.md sec. 4.2), not the MFH paper"),
}


def lookup(recipe: dict, key: str):
    value = recipe
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return list(value) if isinstance(value, tuple) else value


def test_paper_values():
    for name in PAPER_SCALE:
        recipe = load_recipe(RECIPES / f"{name}.toml")[1]
        for key, value, source in PAPER:
            assert lookup(recipe, key) == value, f"{name}: {key} ({source})"


def test_splits_are_explicit_lists_of_the_papers_sizes():
    for name, (total, base, source) in SPLITS.items():
        classes = load_recipe(RECIPES / f"{name}.toml")[1]["data"]["classes"]
        assert len(set(classes)) == len(classes) == base and max(classes) < total, source
    flowers = load_recipe(RECIPES / "mfh-flowers.toml")[1]["data"]["classes"]
    assert flowers == list(range(85))                        # LoFGAN: the first 85 classes


def test_drawn_splits_are_the_ones_their_headers_print():
    """The NABirds list is the seeded draw its header gives as a command (the published split is
    not available offline), not the first classes in folder order."""
    total, base, _ = SPLITS["mfh-nabirds"]
    text = (RECIPES / "mfh-nabirds.toml").read_text()
    assert f"random.Random(0).sample(range({total}), {base})" in text
    classes = load_recipe(RECIPES / "mfh-nabirds.toml")[1]["data"]["classes"]
    assert classes == sorted(random.Random(0).sample(range(total), base))


def test_animal_faces_uses_the_published_split():
    """data.classes are the 119 FUNIT training synsets' positions among the 149 sorted synsets
    (image-folder's class order), so the 30 novel classes are exactly the published test list."""
    lists = Path(__file__).resolve().parents[1] / "memcore_mfh" / "animal_faces"
    train = (lists / "train_classes.txt").read_text().split()
    test = (lists / "test_classes.txt").read_text().split()
    assert len(set(train)) == 119 and len(set(test)) == 30 and not set(train) & set(test)
    folders = sorted(train + test)
    classes = load_recipe(RECIPES / "mfh-animal-faces.toml")[1]["data"]["classes"]
    assert sorted(folders[i] for i in classes) == sorted(train)
    novel = [w for i, w in enumerate(folders) if i not in classes]
    assert sorted(novel) == sorted(test)


def test_every_paper_scale_recipe_has_a_source_header():
    for name in ["mfh-128", *PAPER_SCALE]:
        head = (RECIPES / f"{name}.toml").read_text().split("\n[")[0]
        assert head.startswith("# ") and "Source:" in head, name


def test_recipe_comments_name_files_that_exist():
    for path in RECIPES.glob("*.toml"):
        for word in path.read_text().split():
            if word.startswith("plugins/mfh/recipes/"):
                assert Path(__file__).resolve().parents[3].joinpath(word).exists(), \
                    f"{path.name} names {word}"


def test_paper_scale_recipes_validate(tmp_path, capsys):
    for c in range(555):                      # one image per class folder, as many as NABirds has
        folder = tmp_path / f"{c:03d}"
        folder.mkdir()
        Image.fromarray(np.full((8, 8, 3), c % 256, np.uint8)).save(folder / "a.png")
    for name in ["mfh-128", *PAPER_SCALE]:
        assert main(["validate", str(RECIPES / f"{name}.toml"),
                     "--set", f"data.path={tmp_path}"]) == 0, capsys.readouterr().err
