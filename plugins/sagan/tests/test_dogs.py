"""The stanford-dogs dataset on a tiny synthetic copy of the standard layout."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import memcore
from memcore_sagan.dogs import StanfordDogsOptions, square_around, stanford_dogs

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def voc(boxes, size=(120, 80)) -> str:
    objects = "".join(
        f"<object><name>dog</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    return (f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth>"
            f"</size>{objects}</annotation>")


def picture(path: Path, boxes_and_colours, size=(120, 80)) -> None:
    """A grey image with each box painted in its colour."""
    array = np.full((size[1], size[0], 3), 128, np.uint8)
    for (x0, y0, x1, y1), colour in boxes_and_colours:
        array[y0:y1, x0:x1] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


@pytest.fixture
def dogs(tmp_path) -> Path:
    """Two breeds: one image with two dogs, one with a tiny box, one without an annotation."""
    root = tmp_path / "stanford-dogs"
    a, b = "n02085620-Chihuahua", "n02085782-Japanese_spaniel"
    two = [((10, 10, 50, 50), RED), ((70, 20, 110, 60), BLUE)]   # 40 px squares
    picture(root / "Images" / a / "n02085620_1.jpg", two)
    (root / "Annotation" / a).mkdir(parents=True)
    (root / "Annotation" / a / "n02085620_1").write_text(voc([box for box, _ in two]))
    picture(root / "Images" / b / "n02085782_1.jpg", [((30, 10, 90, 70), GREEN), ((0, 0, 5, 5), RED)])
    (root / "Annotation" / b).mkdir(parents=True)
    (root / "Annotation" / b / "n02085782_1").write_text(voc([(30, 10, 90, 70), (0, 0, 5, 5)]))
    picture(root / "Images" / b / "n02085782_2.jpg", [])              # no annotation file
    return root


def mean_colour(image) -> np.ndarray:
    return image.float().mean((1, 2)).numpy()


def test_crops_each_dog_box_to_a_square_at_the_resolution(dogs):
    data = stanford_dogs(StanfordDogsOptions(root=str(dogs), resolution=16, labels=True))
    # image 1: two boxes; image 2: one box (the 5 px one is under min_box); image 3: centre square
    assert data.images.shape == (4, 3, 16, 16) and str(data.images.dtype) == "torch.uint8"
    assert (data.resolution, data.channels, data.num_classes) == (16, 3, 2)
    assert data.class_names == ("Chihuahua", "Japanese_spaniel")
    assert data.labels.tolist() == [0, 0, 1, 1]
    # The crops hold the dogs: the red and blue boxes are squares, so a crop is all dog.
    for crop, colour in zip(data.images[:2], (RED, BLUE)):
        np.testing.assert_allclose(mean_colour(crop), colour, atol=12)
    image, label = data[0]
    assert image.shape == (3, 16, 16) and -1 <= image.min() and image.max() <= 1 and label == 0


def test_unlabelled_by_default_and_limit(dogs):
    data = stanford_dogs(StanfordDogsOptions(root=str(dogs), limit=3))
    assert len(data) == 3 and data.num_classes == 0 and data.labels is None
    assert data[0][1] == -1


def test_image_mode_ignores_boxes(dogs):
    data = stanford_dogs(StanfordDogsOptions(root=str(dogs), resolution=8, crop="image"))
    assert data.images.shape == (3, 3, 8, 8)


def test_square_around_stays_inside_the_image():
    assert square_around((10, 10, 50, 70), 120, 80) == (0, 10, 60, 70)     # grown to 60 px, shifted in
    assert square_around((0, 0, 200, 30), 120, 80) == (40, 0, 120, 80)    # shrunk to the image
    assert square_around((100, 60, 118, 78), 120, 80) == (100, 60, 118, 78)


def test_missing_root_names_the_recipe_key(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMCORE_STANFORD_DOGS", raising=False)
    with pytest.raises(memcore.MemcoreError, match="data.root is unset"):
        stanford_dogs(StanfordDogsOptions())
    with pytest.raises(memcore.MemcoreError, match=r"data.root = '.*nowhere'.*Images/<breed>"):
        stanford_dogs(StanfordDogsOptions(root=str(tmp_path / "nowhere")))


def test_a_sagan_run_on_the_fixture(dogs, tmp_path, monkeypatch):
    from memcore.cli import main
    monkeypatch.chdir(tmp_path)
    recipe = Path(__file__).parents[1] / "recipes" / "sagan-dogs64-noattn.toml"
    assert main(["run", str(recipe), "--set", f"data.root={str(dogs)!r}", "--set", "train.steps=1",
                 "--set", "data.resolution=32",
                 "--set", "train.batch_size=2", "--set", "generator.width=8",
                 "--set", "discriminator.width=8", "--set", "train.progress=false"]) == 0
    assert (tmp_path / "runs" / "0001-sagan-dogs64-noattn" / "checkpoints" / "step-0000001.pt").exists()
