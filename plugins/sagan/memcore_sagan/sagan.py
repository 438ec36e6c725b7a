"""SAGAN generator and discriminator for any image side that halves at least twice down to a
4-8 px start map (16, 20, 24, 28, 32, 48, 64, 96, 128, ...), with block slots for attention.

The layout is the one of the SAGAN code at 64 px (heykeetae/Self-Attention-GAN), generalised to
any side that halves down to a small even-or-odd start (4 for 32/64/128 px, 7 for 28 px):

    G: z (1x1) -deconv(start)-> start -deconv 4 s2-> ... -> res/2 -deconv 4 s2-> image, tanh
       every hidden layer: spectral norm, BatchNorm (class-conditional when labelled), ReLU;
       block slots after every hidden stage (64 px: 4, 8, 16, 32).
    D: image -conv 4 s2-> res/2 -> ... -> start -conv(start)-> logit
       every layer: spectral norm, LeakyReLU 0.1, no normalisation;
       block slots after every stage (64 px: 32, 16, 8, 4); projection head when labelled.

Widths double towards the small end (G 64 px: 512, 256, 128, 64; D: 64, 128, 256, 512), capped by
``max_width``. The attention placement is not part of the backbone: recipes put
``[[generator.blocks]] kind = "self-attention"`` at the resolutions they want.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

import memcore
from memcore import option, positive


def stage_sizes(resolution: int) -> list[int]:
    """Feature-map sides from the smallest up to the image: 64 -> [4, 8, 16, 32, 64]."""
    sizes = [resolution]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= 4:
        sizes.append(sizes[-1] // 2)
    # Halving must reach a 4-8 px start map (SAGAN's is 4): a larger one would be drawn by a
    # single deconvolution as large as the map, which is no longer the SAGAN architecture.
    if len(sizes) < 3 or sizes[-1] > 8:
        raise memcore.MemcoreError(
            f"data.resolution = {resolution}: the SAGAN backbones need a side that halves at least "
            f"twice down to a 4-8 px start map (28, 32, 48, 64, 96, 128, ...; {resolution} halves "
            f"to {sizes[-1]} px)")
    return sizes[::-1]


def maybe_sn(module: nn.Module, on: bool) -> nn.Module:
    return sn(module) if on else module


def in_range_slope(v):
    return None if 0.0 <= v < 1.0 else "a slope in [0, 1)"


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias come from the class label (de Vries et al.; SAGAN's G)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=num_classes == 0)
        self.gain = nn.Embedding(num_classes, channels) if num_classes else None
        self.bias = nn.Embedding(num_classes, channels) if num_classes else None
        if num_classes:
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.norm(x)
        if self.gain is None:
            return x
        return x * self.gain(c)[:, :, None, None] + self.bias(c)[:, :, None, None]


class GeneratorStage(nn.Module):
    """deconv -> (conditional) BN -> ReLU."""

    def __init__(self, deconv: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.deconv, self.norm, self.act = deconv, ConditionalBatchNorm(channels, num_classes), nn.ReLU()

    def forward(self, x, c):
        return self.act(self.norm(self.deconv(x), c))


@memcore.config
class GeneratorOptions:
    z_dim: int = option(128, help="Latent size (SAGAN: 128).", check=positive)
    width: int = option(64, help="Channels of the last hidden stage (SAGAN conv_dim: 64); doubled "
                        "per stage towards the start.", check=positive)
    max_width: int = option(512, help="Cap on channels per stage.", check=positive)
    spectral_norm: bool = option(True, help="Spectral norm on every layer (SAGAN: yes).")
    conditional: bool = option(True, help="Class-conditional BatchNorm when the dataset has labels.")


class Generator(memcore.Generator):
    def __init__(self, options: GeneratorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        self.z_dim = o.z_dim
        self.num_classes = ctx.num_classes if o.conditional else 0
        sizes = stage_sizes(ctx.resolution)[:-1]                          # hidden sides
        widths = [min(o.width * 2 ** (len(sizes) - 1 - i), o.max_width) for i in range(len(sizes))]
        first = nn.ConvTranspose2d(o.z_dim, widths[0], sizes[0])          # 1x1 -> start x start
        self.stages = nn.ModuleList([GeneratorStage(maybe_sn(first, o.spectral_norm), widths[0],
                                                    self.num_classes)])
        for cin, cout in zip(widths[:-1], widths[1:]):
            up = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
            self.stages.append(GeneratorStage(maybe_sn(up, o.spectral_norm), cout, self.num_classes))
        self.sizes = sizes
        self.slots = ctx.block_slots(dict(zip(sizes, widths)))
        last = nn.ConvTranspose2d(widths[-1], ctx.channels, 4, stride=2, padding=1)
        self.to_image = nn.Sequential(maybe_sn(last, o.spectral_norm), nn.Tanh())

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = z[:, :, None, None]                                           # (B, z, 1, 1)
        for size, stage in zip(self.sizes, self.stages):
            x = self.slots(size, stage(x, c))                             # (B, C_s, s, s)
        return self.to_image(x)


@memcore.config
class DiscriminatorOptions:
    width: int = option(64, help="Channels of the first stage (SAGAN conv_dim: 64); doubled per "
                        "stage.", check=positive)
    max_width: int = option(512, help="Cap on channels per stage.", check=positive)
    spectral_norm: bool = option(True, help="Spectral norm on every layer (SAGAN: yes).")
    leaky_slope: float = option(0.1, help="LeakyReLU slope (SAGAN: 0.1).", check=in_range_slope)
    conditional: bool = option(True, help="Projection head on labels when the dataset has them.")


class Discriminator(memcore.Discriminator):
    def __init__(self, options: DiscriminatorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        self.num_classes = ctx.num_classes if o.conditional else 0
        sizes = stage_sizes(ctx.resolution)[::-1][1:]                    # feature sides, largest first
        widths = [min(o.width * 2 ** i, o.max_width) for i in range(len(sizes))]
        self.stages = nn.ModuleList()
        for cin, cout in zip([ctx.channels] + widths[:-1], widths):
            down = nn.Conv2d(cin, cout, 4, stride=2, padding=1)
            self.stages.append(nn.Sequential(maybe_sn(down, o.spectral_norm),
                                             nn.LeakyReLU(o.leaky_slope)))
        self.sizes = sizes
        self.slots = ctx.block_slots(dict(zip(sizes, widths)))
        self.head = maybe_sn(nn.Conv2d(widths[-1], 1, sizes[-1]), o.spectral_norm)   # s x s -> 1
        # Projection discriminator (Miyato & Koyama 2018): <embed(c), sum-pooled features>.
        self.embed = maybe_sn(nn.Embedding(self.num_classes, widths[-1]), o.spectral_norm) \
            if self.num_classes else None

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = x
        for size, stage in zip(self.sizes, self.stages):
            h = self.slots(size, stage(h))                                # (B, C_s, s, s)
        logits = self.head(h).flatten()                                   # (B,)
        if self.embed is not None and c is not None:
            logits = logits + (self.embed(c) * h.sum((2, 3))).sum(1)
        return logits
