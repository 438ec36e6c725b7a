"""A metric's reference_split must be a split of the recipe's dataset: refused by validate (before
step 1), not found at the first evaluation."""
import contextlib
import io

import numpy as np
import pytest
import tomli_w
from PIL import Image

import memcore
from memcore.cli import main
from memcore.config import Component
from memcore.registry import get_registry
from memcore_kit.testing import tiny_recipe
from memcore_fidelity.reference import check_reference_split

FID = {"kind": "fid", "extractor": "fashion-classifier", "num_samples": 16}


def _validate(recipe, folder, monkeypatch):
    (folder / "r.toml").write_text(tomli_w.dumps(recipe))
    monkeypatch.chdir(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", "r.toml"])
    return code, err.getvalue()


def _spec(kind, **options):
    config = get_registry().get("dataset", kind).load_config()
    return Component(kind=kind, options=config(**options))


def test_split_of_a_dataset_without_splits_is_refused(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    recipe = tiny_recipe(data={"kind": "image-folder", "path": str(images), "resolution": 16},
                         metrics=[{**FID, "reference_split": "test"}])
    code, text = _validate(recipe, tmp_path, monkeypatch)
    assert code == 2, text
    assert text.startswith("error:") and "Traceback" not in text, text
    assert "metrics[0].reference_split = 'test'" in text and "no split option" in text, text
    assert not (tmp_path / "runs").exists()


def test_split_the_dataset_lacks_is_refused():
    with pytest.raises(memcore.MemcoreError, match=r"reference_split = 'all'.*'train', 'test'"):
        check_reference_split(_spec("cifar10"), "all", "metrics[0]")


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_splits_the_dataset_has_pass(split):
    check_reference_split(_spec("fashion-mnist"), split, "metrics[0]")


def test_fashion_recipe_with_test_reference_validates(tmp_path, monkeypatch):
    code, text = _validate(tiny_recipe(metrics=[{**FID, "reference_split": "test"}]), tmp_path,
                           monkeypatch)
    assert code == 0, text
