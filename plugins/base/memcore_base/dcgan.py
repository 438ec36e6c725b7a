"""DCGAN-style G and D for 28-64 px, with a block slot after every stage.

The stage sizes come from the image side: it is halved while it stays an integer >= 4, so 28 px
runs 7 -> 14 -> 28, 32 px runs 4 -> 8 -> 16 -> 32 and 64 px 4 -> ... -> 64.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import memcore
from memcore import in_range, option, positive


def stage_sizes(resolution: int) -> list[int]:
    sizes = [resolution]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= 4:
        sizes.append(sizes[-1] // 2)
    return sizes[::-1]  # smallest first


def _sn(module, on: bool):
    return spectral_norm(module) if on else module


@memcore.config
class GeneratorOptions:
    z_dim: int = option(128, help="Latent size.", check=positive)
    width: int = option(64, help="Channels at the last stage; doubled per stage towards the input.",
                        check=positive)
    max_width: int = option(512, help="Cap on channels per stage.", check=positive)
    spectral_norm: bool = option(False, help="Spectral norm on every layer (SAGAN style).")
    batch_norm: bool = option(True, help="BatchNorm after every hidden layer.")
    conditional: bool = option(True, help="Use labels when the dataset has them (class embedding "
                               "concatenated to z).")


class Generator(memcore.Generator):
    def __init__(self, options: GeneratorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        self.z_dim = o.z_dim
        self.num_classes = ctx.num_classes if o.conditional else 0
        sizes = stage_sizes(ctx.resolution)
        widths = [min(o.width * 2 ** (len(sizes) - 1 - i), o.max_width) for i in range(len(sizes))]
        self.start, self.c0 = sizes[0], widths[0]
        self.embed = nn.Embedding(self.num_classes, o.z_dim) if self.num_classes else None
        in_dim = o.z_dim * (2 if self.embed is not None else 1)
        norm = (lambda c: nn.BatchNorm2d(c)) if o.batch_norm else (lambda c: nn.Identity())
        self.stem = _sn(nn.Linear(in_dim, widths[0] * sizes[0] ** 2), o.spectral_norm)
        self.stem_act = nn.Sequential(norm(widths[0]), nn.ReLU())
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          _sn(nn.Conv2d(cin, cout, 3, padding=1), o.spectral_norm),
                          norm(cout), nn.ReLU())
            for cin, cout in zip(widths[:-1], widths[1:]))
        self.sizes = sizes
        self.slots = ctx.block_slots(dict(zip(sizes, widths)))
        self.to_image = nn.Sequential(_sn(nn.Conv2d(widths[-1], ctx.channels, 3, padding=1),
                                          o.spectral_norm), nn.Tanh())

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(c)], dim=1)
        x = self.stem_act(self.stem(z).view(-1, self.c0, self.start, self.start))
        x = self.slots(self.sizes[0], x)
        for size, up in zip(self.sizes[1:], self.ups):
            x = self.slots(size, up(x))
        return self.to_image(x)


@memcore.config
class DiscriminatorOptions:
    width: int = option(64, help="Channels at the first stage; doubled per stage.", check=positive)
    max_width: int = option(512, help="Cap on channels per stage.", check=positive)
    spectral_norm: bool = option(True, help="Spectral norm on every layer.")
    batch_norm: bool = option(False, help="BatchNorm after hidden convolutions.")
    leaky_slope: float = option(0.2, help="LeakyReLU slope (SAGAN uses 0.1).",
                                check=in_range(0.0, 1.0, hi_open=True))
    conditional: bool = option(True, help="Projection head on labels when the dataset has them.")


class Discriminator(memcore.Discriminator):
    def __init__(self, options: DiscriminatorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        self.num_classes = ctx.num_classes if o.conditional else 0
        sizes = stage_sizes(ctx.resolution)[::-1]  # largest first
        widths = [min(o.width * 2 ** i, o.max_width) for i in range(len(sizes))]
        act = lambda: nn.LeakyReLU(o.leaky_slope)
        norm = (lambda c: nn.BatchNorm2d(c)) if o.batch_norm else (lambda c: nn.Identity())
        self.stem = nn.Sequential(_sn(nn.Conv2d(ctx.channels, widths[0], 3, padding=1),
                                      o.spectral_norm), act())
        self.downs = nn.ModuleList(
            nn.Sequential(_sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1), o.spectral_norm),
                          norm(cout), act())
            for cin, cout in zip(widths[:-1], widths[1:]))
        self.sizes = sizes
        self.slots = ctx.block_slots(dict(zip(sizes, widths)))
        feat = widths[-1] * sizes[-1] ** 2
        self.head = _sn(nn.Linear(feat, 1), o.spectral_norm)
        self.embed = _sn(nn.Embedding(self.num_classes, feat), o.spectral_norm) \
            if self.num_classes else None

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.slots(self.sizes[0], self.stem(x))
        for size, down in zip(self.sizes[1:], self.downs):
            h = self.slots(size, down(h))
        h = h.flatten(1)
        logits = self.head(h).squeeze(1)
        if self.embed is not None and c is not None:
            logits = logits + (self.embed(c) * h).sum(1)
        return logits
