"""Image grids saved with Pillow (no torchvision needed)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import safewrite
from .protocols import to_uint8


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """float images in [-1, 1], (N, C, H, W) -> uint8 HxWxC grid (C is 1 or 3)."""
    x = to_uint8(images).cpu()
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    out = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[top:top + h, left:left + w] = x[i].permute(1, 2, 0).numpy()
    return out


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, scale: int = 1,
              inside: Path | None = None) -> Path:
    """Save a grid PNG through :mod:`memcore.safewrite` (``inside``: the run folder, if any)."""
    array = grid(images, nrow)
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with safewrite.replacing(path, inside) as tmp:
        img.save(tmp)
    return Path(path)


def load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """An image file as float (1, C, H, W) in [-1, 1], centre-cropped and resized."""
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((resolution, resolution),
                                                                   Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8).reshape(resolution, resolution, channels)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1)
