"""affine-MNIST (memoryGAN Table 2, Appendix B.2): digits randomly rotated by up to +-20 degrees
and randomly placed in a 40 x 40 image.

The paper gives only that sentence. Here each 28 x 28 digit gets one angle ~ U(-max_rotation,
max_rotation) and one centre offset ~ U(-(size - 28)/2, (size - 28)/2) per axis (the whole
28 x 28 frame stays inside the canvas, so no stroke is cut), bilinear, black background, drawn
once from ``seed``: the transformed set is a fixed dataset, as affNIST is.

Digit sources: ``digits = "mnist"`` reads MNIST's idx files (``path``, $MEMCORE_MNIST or a
torchvision download when online); ``"opencv"`` takes the 5,000 handwritten 20 x 20 digits that
Debian's ``opencv-doc`` ships (``examples/data/digits.png``), padded to 28 x 28 as MNIST centres
its digits in a 20 x 20 box, split 450 / 50 per class into train / test.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

import memcore
from memcore import MemcoreError, option
from memcore_datasets.images import MnistLikeOptions, _read_idx, cache_dir, finish

DIGIT_CLASSES = tuple(str(d) for d in range(10))
OPENCV_DIGITS = "/usr/share/doc/opencv-doc/examples/data/digits.png"
FRAME = 28  # MNIST's side: the frame that is rotated and placed


@memcore.config
class AffineMnistOptions(MnistLikeOptions):
    digits: Literal["mnist", "opencv"] = option(
        "mnist", help="Digit set: MNIST's idx files (paper), or the 5,000 handwritten digits of "
        "Debian's opencv-doc (offline stand-in: `apt-get install opencv-doc`).")
    path: Optional[str] = option(None, help="digits = mnist: folder with train-images-idx3-ubyte.gz "
                                 "etc. (default: $MEMCORE_MNIST, then a torchvision download); "
                                 "opencv: the digits.png file (default: opencv-doc's).")
    size: int = option(40, help="Side of the canvas the digit is placed in (paper: 40).",
                       check=memcore.in_range(FRAME, 1024))
    max_rotation: float = option(20.0, help="Rotation angle ~ U(-max, max) degrees (paper: 20).",
                                 check=memcore.in_range(0.0, 180.0))
    seed: int = option(0, help="Seeds the angle and position of every image (drawn once).",
                       check=memcore.non_negative)


def affine_mnist(options: AffineMnistOptions, ctx: memcore.BuildContext | None = None):
    load = _mnist if options.digits == "mnist" else _opencv_digits
    images, labels, where = load(options)
    images = place(torch.as_tensor(images), options.size, options.max_rotation, options.seed)
    return finish(images, labels, options, DIGIT_CLASSES,
                  f"affine-MNIST {options.split} ({options.size} px, +-{options.max_rotation:g} "
                  f"degrees, seed {options.seed}) of {where}")


def place(digits: torch.Tensor, size: int, max_rotation: float, seed: int,
          chunk: int = 4096) -> torch.Tensor:
    """(n, 28, 28) uint8 -> (n, size, size) uint8: each digit rotated about its frame's centre by
    one angle and shifted by one offset, both uniform, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    n = len(digits)
    angle = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * math.radians(max_rotation)
    shift = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * (size - FRAME) / 2
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    # affine_grid maps output to input coordinates, both in [-1, 1] of their own side:
    # u_in = (size / 28) R u_out - (2 / 28) R shift (shift in pixels from the canvas centre).
    theta = torch.cat([rotation * size / FRAME,
                       -(2 / FRAME) * (rotation @ shift[:, :, None])], dim=2).float()
    out = []
    for part, th in zip(digits.split(chunk), theta.split(chunk)):
        grid = F.affine_grid(th, [len(part), 1, size, size], align_corners=False)
        moved = F.grid_sample(part[:, None].float(), grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        out.append(moved[:, 0].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else digits.new_zeros(0, size, size)


# -- digit sources ----------------------------------------------------------------------------
def _mnist(options: AffineMnistOptions):
    folder = _mnist_folder(options)
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[options.split]
    images = np.concatenate([_read_idx(folder / f"{p}-images-idx3-ubyte.gz") for p in parts])
    labels = np.concatenate([_read_idx(folder / f"{p}-labels-idx1-ubyte.gz") for p in parts])
    if images.shape[1:] != (FRAME, FRAME):
        raise MemcoreError(f"data.path = {str(folder)!r}: expected 28 x 28 MNIST images, got "
                           f"{images.shape[1]} x {images.shape[2]}")
    return images, labels, f"MNIST from {folder}"


def _has_mnist(folder) -> bool:
    return (Path(folder).expanduser() / "train-images-idx3-ubyte.gz").exists()


def _mnist_folder(options: AffineMnistOptions) -> Path:
    if options.path:
        if not _has_mnist(options.path):
            raise MemcoreError(f"data.path = {options.path!r}: no train-images-idx3-ubyte.gz "
                               "there (MNIST's idx files are expected)")
        return Path(options.path).expanduser()
    env = os.environ.get("MEMCORE_MNIST")
    if env and _has_mnist(env):
        return Path(env).expanduser()
    root = cache_dir() / "mnist"
    try:
        from torchvision.datasets import MNIST
        MNIST(root=str(root), download=True)
    except Exception as exc:
        raise MemcoreError(
            "MNIST not found: set data.path or MEMCORE_MNIST to a folder holding "
            "train-images-idx3-ubyte.gz etc., or use the offline digit set with "
            "data.digits = \"opencv\" after `apt-get install opencv-doc` (download attempt "
            f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]})") from None
    return root / "MNIST" / "raw"


def _opencv_digits(options: AffineMnistOptions):
    """digits.png: a 50 x 100 sheet of 20 x 20 tiles, five rows per digit 0..9 (500 each)."""
    from PIL import Image
    path = Path(options.path or OPENCV_DIGITS).expanduser()
    if not path.is_file():
        raise MemcoreError(f"data.path = {str(path)!r}: the opencv digit sheet is not there "
                           "(`apt-get install opencv-doc` installs it)")
    sheet = np.asarray(Image.open(path).convert("L"))
    if sheet.shape != (1000, 2000):
        raise MemcoreError(f"data.path = {str(path)!r}: expected opencv's 1000 x 2000 digit "
                           f"sheet, got {sheet.shape[0]} x {sheet.shape[1]}")
    tiles = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    labels = np.repeat(np.arange(10), 500)
    pad = (FRAME - 20) // 2
    images = np.pad(tiles, ((0, 0), (pad, pad), (pad, pad)))
    if options.split != "all":
        position = np.arange(5000) % 500
        keep = position < 450 if options.split == "train" else position >= 450
        images, labels = images[keep], labels[keep]
    return images, labels, f"opencv-doc digits {path}"
