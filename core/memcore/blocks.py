"""Block slots: layers inserted into a backbone at a named resolution, from the recipe alone.

A backbone offers its resolutions once, when it is built::

    self.slots = ctx.block_slots({8: 256, 16: 128, 32: 64})   # resolution -> channels
    ...
    x = self.slots(16, x)                                      # in forward, after the 16 px stage

and the recipe chooses what goes there::

    [[generator.blocks]]
    kind = "self-attention"
    at = 16

Block factories are called as ``factory(options, ctx)`` with ``ctx.channels`` set to the feature
channels at that resolution and ``ctx.resolution`` to the resolution. A block maps (B, C, H, W) to
the same shape. Several blocks at one resolution run in recipe order.
"""
from __future__ import annotations

from typing import Mapping

import attrs
import torch
from torch import nn

from .config import config, option, positive
from .errors import RecipeError
from .registry import make_component


@config
class BlockOptions:
    """Base options of every block component."""

    at: int = option(help="Resolution (pixels) of the backbone stage the block follows.",
                     check=positive)


class BlockSlots(nn.Module):
    def __init__(self, blocks, channels_at: Mapping[int, int], where: str, ctx):
        super().__init__()
        self.resolutions = dict(channels_at)
        self.stages = nn.ModuleDict()
        problems = []
        for i, spec in enumerate(blocks):
            at = getattr(spec.options, "at", None)
            if at not in self.resolutions:
                offered = ", ".join(map(str, sorted(self.resolutions))) or "none"
                problems.append(f"{where}[{i}].at = {at!r}: this backbone offers block slots at "
                                f"{offered}")
                continue
            block_ctx = attrs.evolve(ctx, resolution=at, channels=self.resolutions[at],
                                     role=f"{where}[{i}]", blocks=())
            block = make_component("block", spec, block_ctx)
            if str(at) not in self.stages:
                self.stages[str(at)] = nn.ModuleList()
            self.stages[str(at)].append(block)
        if problems:
            raise RecipeError(problems, where)

    def forward(self, resolution: int, x: torch.Tensor) -> torch.Tensor:
        for block in self.stages[str(resolution)] if str(resolution) in self.stages else ():
            x = block(x)
        return x
