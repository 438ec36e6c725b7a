"""affine-MNIST: rotation within +-max_rotation, placement inside the canvas, both sources."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from memcore.cli import main
from memcore_memorygan.affine import AffineMnistOptions, affine_mnist, place


def moments(images: torch.Tensor):
    """Centre of mass (x, y) and principal-axis angle in degrees of each (n, H, W) image."""
    w = images.double()
    ys, xs = torch.meshgrid(torch.arange(w.shape[1]).double(),
                            torch.arange(w.shape[2]).double(), indexing="ij")
    mass = w.sum((1, 2))
    cx, cy = (w * xs).sum((1, 2)) / mass, (w * ys).sum((1, 2)) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    mxx, myy, mxy = ((w * a * b).sum((1, 2)) / mass for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    angle = torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy))
    return cx, cy, angle, mass


def test_digits_are_rotated_within_the_bound_and_placed_inside_the_canvas(bar_digits):
    digits = torch.as_tensor(bar_digits(2000))
    out = place(digits, 40, 20.0, seed=0)
    assert out.shape == (2000, 40, 40) and out.dtype == torch.uint8
    cx, cy, angle, mass = moments(out)
    # The bar keeps its ink (nothing cut off by the canvas edge) ...
    assert torch.allclose(mass, digits.double().sum((1, 2)), rtol=0.01)
    # ... its centre (13.5 in the 28 px frame) moves over +-6 px around the canvas centre 19.5 ...
    assert cx.min() >= 13.5 - 0.05 and cx.max() <= 25.5 + 0.05
    assert cx.min() < 14.0 and cx.max() > 25.0 and cy.min() < 14.0 and cy.max() > 25.0
    # ... and it turns by up to 20 degrees either way, spread over the whole range.
    assert angle.abs().max() <= 20.0 + 0.5
    assert angle.min() < -18 and angle.max() > 18 and abs(float(angle.mean())) < 1.5


def test_placement_is_drawn_once_from_the_seed(bar_digits):
    digits = torch.as_tensor(bar_digits(16))
    assert torch.equal(place(digits, 40, 20.0, seed=3), place(digits, 40, 20.0, seed=3))
    assert not torch.equal(place(digits, 40, 20.0, seed=3), place(digits, 40, 20.0, seed=4))
    still = place(digits, 28, 0.0, seed=0)               # no room, no angle: the digit itself
    assert torch.equal(still, digits)


def test_mnist_files_become_a_40_px_labelled_dataset(mnist_folder):
    ds = affine_mnist(AffineMnistOptions(path=str(mnist_folder)))
    assert ds.images.shape == (96, 1, 40, 40) and ds.num_classes == 10
    assert ds.labels.tolist() == [i % 10 for i in range(96)]
    test = affine_mnist(AffineMnistOptions(path=str(mnist_folder), split="test", size=48))
    assert test.images.shape == (16, 1, 48, 48)


def test_opencv_digit_sheet_is_cut_into_labelled_tiles(tmp_path):
    sheet = np.zeros((1000, 2000), np.uint8)
    for digit in range(10):                                 # five tile rows per digit
        sheet[digit * 100:(digit + 1) * 100] = 20 * digit + 10
    Image.fromarray(sheet).save(tmp_path / "digits.png")
    ds = affine_mnist(AffineMnistOptions(digits="opencv", path=str(tmp_path / "digits.png"),
                                         max_rotation=0.0, size=28))
    assert ds.images.shape == (4500, 1, 28, 28) and ds.labels.bincount().tolist() == [450] * 10
    for digit in (0, 7):                                    # the 20 x 20 tile, padded by 4
        image = ds.images[ds.labels == digit][0, 0]
        assert (image[4:24, 4:24] == 20 * digit + 10).all() and image[:4].sum() == 0


@pytest.mark.parametrize("override,needle", [
    ("data.path=\"/nowhere\"", "data.path = '/nowhere': no train-images-idx3-ubyte.gz"),
    ("data.size=20", "data.size = 20"),
])
def test_bad_source_or_size_is_a_clear_error(tmp_path, monkeypatch, capsys, override, needle):
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "affine-mnist-memorygan.toml"
    assert main(["run", str(recipe), "--set", override]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not (tmp_path / "runs").exists()


def test_missing_mnist_names_the_keys_and_the_offline_digit_set(tmp_path, monkeypatch):
    import torchvision.datasets
    from memcore import MemcoreError

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.delenv("MEMCORE_MNIST", raising=False)
    monkeypatch.setenv("MEMCORE_CACHE", str(tmp_path))
    with pytest.raises(MemcoreError, match=r"set data.path or MEMCORE_MNIST.*data.digits = \"opencv\""):
        affine_mnist(AffineMnistOptions())
