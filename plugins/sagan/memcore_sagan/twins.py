"""Twin shapes: a procedurally generated dataset whose images need long-range consistency, and
the checker that scores it (the metric ``twin-match``).

Each image is a dark, slightly noisy grey with two filled shapes, one in the left half and one in the right half, at
independent random positions (their centres 11 to 21 px apart at 32 px). The two are the same
shape (square, disc, triangle or cross) in the same colour (red, green, blue or yellow), drawn
uniformly from the 16 pairs. A generator that draws each half well but does not carry the
attributes across the image matches them by chance: 1 in 16. That is the dependency SAGAN's
self-attention is claimed to capture and convolutions to miss.

The checker finds the largest 8-connected foreground component of each half, calls it a shape
when its bounding box is about the object's size and its mask, resized to the template's side,
overlaps one template well enough (IoU), and takes the palette colour nearest its mean colour.
A sample meets the constraint when both halves hold a recognised shape and the two agree in
shape and colour.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

import memcore
from memcore import dist, option

SHAPES = ("square", "disc", "triangle", "cross")
PALETTE = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
           "yellow": (230, 210, 40)}
COLOURS = tuple(PALETTE)
FOREGROUND = 100          # a pixel whose brightest channel exceeds this is part of a shape
SPLIT_STREAM = {"train": 0, "test": 1}


def side_of(resolution: int) -> int:
    """The object's side: 9 px at 32 px, 17 at 64 (odd, so every shape has a centre pixel)."""
    return resolution // 4 + 1


def templates(side: int) -> torch.Tensor:
    """Boolean masks (len(SHAPES), side, side), each touching all four edges of its box."""
    c = (side - 1) / 2
    i, j = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    bar = side / 6
    masks = {"square": torch.ones(side, side, dtype=torch.bool),
             "disc": (i - c) ** 2 + (j - c) ** 2 <= (side / 2) ** 2,
             "triangle": (j - c).abs() <= i / (side - 1) * c + 0.25,
             "cross": ((i - c).abs() <= bar) | ((j - c).abs() <= bar)}
    return torch.stack([masks[s] for s in SHAPES])


# -- the dataset ---------------------------------------------------------------------------------
@memcore.config
class TwinShapesOptions(memcore.DatasetOptions):
    count: int = option(10_000, help="Images generated.", check=memcore.positive)
    resolution: Literal[32, 64] = option(32, help="Image side (shapes 9 px at 32, 17 px at 64).")
    split: Literal["train", "test"] = option("train", help="'test': another draw of the same "
                                             "distribution (a held-out reference set).")
    background: int = option(32, help="Grey level of the background (0-99: below the checker's "
                             "foreground threshold).", check=memcore.in_range(0, FOREGROUND - 1))
    noise: float = option(8.0, help="Std of Gaussian pixel noise on the background (clipped "
                          "to 0-99), so the real images are not a degenerate constant that a "
                          "discriminator separates at once.", check=memcore.non_negative)
    seed: int = option(0, help="Seed of the draw (with the split: the images are a function of "
                       "seed, split, count and resolution).", check=memcore.non_negative)


def draw(count: int, resolution: int, seed: int, stream: int = 0, background: int = 32,
         noise: float = 8.0):
    """``(images uint8 (count, 3, R, R), pair index (count,) in 0..15, boxes (count, 2, 2))``:
    the pair index is shape * len(COLOURS) + colour, boxes the (row, column) of each shape's
    top-left corner, left then right."""
    rng = np.random.default_rng([seed, stream])
    side, half = side_of(resolution), resolution // 2
    masks = templates(side).numpy()
    colours = np.array([PALETTE[c] for c in COLOURS], np.uint8)
    pairs = rng.integers(len(SHAPES) * len(COLOURS), size=count)
    rows = rng.integers(1, resolution - side, size=(count, 2))
    cols = rng.integers(1, half - side, size=(count, 2)) + np.array([0, half])
    grey = rng.normal(background, noise, size=(count, resolution, resolution, 1)) if noise \
        else np.full((count, resolution, resolution, 1), background)
    images = np.repeat(grey.clip(0, FOREGROUND - 1).round().astype(np.uint8), 3, axis=-1)
    for n, pair in enumerate(pairs):
        mask, colour = masks[pair // len(COLOURS)], colours[pair % len(COLOURS)]
        for r, c in zip(rows[n], cols[n]):
            images[n, r:r + side, c:c + side][mask] = colour
    boxes = np.stack([rows, cols], axis=-1)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(pairs), \
        torch.from_numpy(boxes)


def twin_shapes(options: TwinShapesOptions, ctx: memcore.BuildContext | None = None):
    o = options
    images, _, _ = draw(o.count, o.resolution, o.seed, SPLIT_STREAM[o.split], o.background, o.noise)
    images = images[:o.limit]            # the first images of the same draw, as limit means elsewhere
    return TwinShapesDataset(images.contiguous(), f"twin-shapes {o.split} {len(images)} at "
                             f"{o.resolution} px (seed {o.seed})")


class TwinShapesDataset(memcore.ImageDataset):
    def __init__(self, images: torch.Tensor, description: str):
        self.images, self.labels = images, None
        self.channels, self.resolution = 3, images.shape[-1]
        self.description = description


# -- the checker ---------------------------------------------------------------------------------
def largest_components(foreground: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected component of each boolean mask (N, H, W), as a mask (ties: the
    component holding the later pixel). Labels spread by 3 x 3 max-pooling within the foreground
    until nothing changes, so each pixel ends with the largest index in its component."""
    n, h, w = foreground.shape
    index = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(n, h, w)
    labels = torch.where(foreground, index, 0.0)
    while True:
        spread = torch.where(foreground, F.max_pool2d(labels[:, None], 3, 1, 1)[:, 0], 0.0)
        if torch.equal(spread, labels):
            break
        labels = spread
    flat = labels.view(n, -1).long()
    counts = torch.zeros(n, h * w + 1).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
    counts[:, 0] = 0                                  # the background is no component
    best = counts.argmax(1)
    return (labels == best.view(n, 1, 1)) & foreground


def read_halves(halves: torch.Tensor, masks: torch.Tensor, min_iou: float) -> torch.Tensor:
    """(shape, colour) indices (N, 2) of the largest shape in each half (uint8 (N, 3, H, W));
    -1 for both where a half holds no recognisable shape."""
    side = masks.shape[-1]
    palette = torch.tensor([PALETTE[c] for c in COLOURS], dtype=torch.float32)
    found = torch.full((len(halves), 2), -1, dtype=torch.long)
    components = largest_components(halves.amax(1) > FOREGROUND)
    for n, component in enumerate(components):
        rows, cols = component.any(1).nonzero()[:, 0], component.any(0).nonzero()[:, 0]
        if not len(rows):
            continue
        height, width = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
        if not (0.6 * side <= min(height, width) and max(height, width) <= 1.5 * side):
            continue  # a blob of another size (a smear, noise across the half) is no shape
        crop = component[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].float()[None, None]
        mask = F.interpolate(crop, size=(side, side), mode="area")[0, 0] > 0.5
        iou = (mask & masks).sum((1, 2)) / (mask | masks).sum((1, 2))
        if iou.max() < min_iou:
            continue
        mean = halves[n][:, component].float().mean(1)
        found[n] = torch.stack([iou.argmax(), ((palette - mean) ** 2).sum(1).argmin()])
    return found


def check_pairs(images: torch.Tensor, min_iou: float = 0.6) -> torch.Tensor:
    """Per image (uint8 (N, 3, R, R)) the flags (N, 4): both halves recognised, shapes equal,
    colours equal, both equal (equal flags count only where both halves are recognised)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise memcore.MemcoreError(f"twin-match checks RGB images (N, 3, H, W); got shape "
                                   f"{tuple(images.shape)}")
    half = images.shape[-1] // 2
    masks = templates(side_of(images.shape[-1]))
    left = read_halves(images[..., :half], masks, min_iou)
    right = read_halves(images[..., half:], masks, min_iou)
    valid = (left[:, 0] >= 0) & (right[:, 0] >= 0)
    same = (left == right) & valid[:, None]
    return torch.stack([valid, same[:, 0], same[:, 1], same.all(1)], dim=1)


@memcore.config
class TwinMatchOptions(memcore.MetricOptions):
    min_iou: float = option(0.6, help="Overlap with a shape template (after resizing the blob to "
                            "the template's side) needed to call a blob that shape.",
                            check=memcore.in_range(0.0, 1.0, lo_open=True))


class TwinMatch(memcore.Metric):
    """Share of samples whose two halves hold the same shape in the same colour (the headline,
    ``twin_match``), with the shares that hold two recognised shapes at all (``twin_valid``) and
    that agree in shape or in colour alone. Chance, for a generator that draws both halves well
    but independently, is ``twin_valid`` / 16."""

    key = "twin_match"
    higher_is_better = True
    values = ("twin_match", "twin_valid", "twin_shape", "twin_colour")

    def __init__(self, options: TwinMatchOptions, ctx):
        super().__init__(options, ctx)
        resolution = getattr(ctx, "resolution", 0)
        channels = getattr(ctx, "channels", 0)
        if channels not in (0, 3) or resolution not in (0, 32, 64):
            raise memcore.MemcoreError(
                f"{getattr(ctx, 'role', '') or 'metrics'}: twin-match checks the twin-shapes "
                f"images (3 channels, 32 or 64 px); this run's images have {channels} channel(s) "
                f"at {resolution} px")

    def compute(self, session) -> dict:
        mine = [check_pairs(batch, self.options.min_iou) for batch in
                session.generate(self.options.num_samples)]
        local = torch.cat(mine) if mine else torch.zeros(0, 4, dtype=torch.bool)
        flags = dist.gather_rows(local.to(session.device)).cpu().float()
        share = flags.mean(0).tolist()
        return {"twin_match": share[3], "twin_valid": share[0], "twin_shape": share[1],
                "twin_colour": share[2], "twin_samples": str(len(flags)),
                "twin_chance": f"twin_valid/{len(SHAPES) * len(COLOURS)}",
                "twin_min_iou": str(self.options.min_iou)}
