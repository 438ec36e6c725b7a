"""DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout.

The same random transform family is applied to every image D sees, real or fake, so G receives
gradients through it. Randomness comes from torch's global RNG (saved per rank in checkpoints).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import memcore
from memcore import in_range, option


@memcore.config
class DiffAugmentOptions:
    policy: list[Literal["color", "translation", "cutout"]] = option(
        factory=lambda: ["color", "translation", "cutout"], help="Transforms, applied in order.")
    probability: float = option(1.0, help="Chance that a batch is augmented at all.",
                                check=in_range(0.0, 1.0))
    translation_ratio: float = option(0.125, help="Max shift as a fraction of the side.",
                                      check=in_range(0.0, 1.0))
    cutout_ratio: float = option(0.5, help="Cutout square side as a fraction of the side.",
                                 check=in_range(0.0, 1.0))


def color(x):
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
    if x.shape[1] == 3:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean


def translation(x, ratio):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x, ratio):
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


class DiffAugment(nn.Module):
    def __init__(self, options: DiffAugmentOptions, ctx: memcore.BuildContext | None = None):
        super().__init__()
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        if o.probability < 1.0 and torch.rand(()) >= o.probability:
            return x
        for name in o.policy:
            if name == "color":
                x = color(x)
            elif name == "translation":
                x = translation(x, o.translation_ratio)
            else:
                x = cutout(x, o.cutout_ratio)
        return x
