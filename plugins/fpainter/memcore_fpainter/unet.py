"""The U-Net refinement stage (sec. 3.2, App. C.1): image' = UNet(FPA(z)).

The U-Net follows lucidrains/denoising-diffusion-pytorch as the authors used it, without the time
embedding: per level two residual blocks (GroupNorm, SiLU, 3x3 conv) and a stride-2 conv down;
self-attention at the levels whose side is at most ``unet_attention_at`` and in the middle; the
mirror image upwards with skip connections. The ``fpa-unet`` generator keeps the FPA as
``self.painter`` (same names as the ``fpa`` generator, so a stage-1 run loads into it with
``train.init_from``) and the U-Net as ``self.unet``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

import memcore
from memcore import option, positive

from .fpa import FPAOptions, Painter, check_canvas, painter_shape

HEADS = 4  # of the U-Net's self-attention (denoising-diffusion-pytorch's default)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  nn.GroupNorm(groups, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the H*W positions, residual."""

    def __init__(self, dim: int, groups: int, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, dim)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(b, 3, self.heads, c // self.heads, h * w) \
            .transpose(-1, -2).unbind(1)                     # each (B, heads, HW, c/heads)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int, mults: tuple[int, ...],
                 groups: int, attention_at: int):
        super().__init__()
        widths = [width * m for m in mults]
        sides = [resolution // 2 ** i for i in range(len(mults))]
        attend = lambda side, dim: SelfAttention(dim, groups) if side <= attention_at else nn.Identity()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.downs = nn.ModuleList()
        cin = width
        for i, (dim, side) in enumerate(zip(widths, sides)):
            last = i == len(widths) - 1
            self.downs.append(nn.ModuleList([
                ResBlock(cin, dim, groups), ResBlock(dim, dim, groups), attend(side, dim),
                nn.Identity() if last else nn.Conv2d(dim, dim, 4, stride=2, padding=1)]))
            cin = dim
        self.mid = nn.Sequential(ResBlock(cin, cin, groups), SelfAttention(cin, groups),
                                 ResBlock(cin, cin, groups))
        self.ups = nn.ModuleList()
        for i, (dim, side) in reversed(list(enumerate(zip(widths, sides)))):
            first = i == 0
            self.ups.append(nn.ModuleList([
                ResBlock(cin + dim, dim, groups), ResBlock(dim + dim, dim, groups), attend(side, dim),
                nn.Identity() if first else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                          nn.Conv2d(dim, widths[i - 1], 3, padding=1))]))
            cin = dim if first else widths[i - 1]
        self.head = nn.Sequential(ResBlock(cin + width, width, groups), nn.Conv2d(width, channels, 1))

    def forward(self, x):                                   # (B, C, H, W) -> (B, C, H, W)
        x = self.stem(x)
        first, skips = x, []
        for block1, block2, attn, down in self.downs:
            x = block1(x)
            skips.append(x)
            x = attn(block2(x))
            skips.append(x)
            x = down(x)
        x = self.mid(x)
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat([x, skips.pop()], dim=1))
            x = attn(block2(torch.cat([x, skips.pop()], dim=1)))
            x = up(x)
        return self.head(torch.cat([x, first], dim=1))


def _check_mults(v):
    return None if v and all(m > 0 for m in v) else "a non-empty list of positive integers"


@memcore.config
class FPAUNetOptions(FPAOptions):
    unet_width: int = option(32, help="U-Net base width (the authors use the image side, 64).",
                             check=positive)
    unet_mults: list[int] = option(factory=lambda: [1, 2, 4], help="Width multiplier per U-Net "
                                   "level (one stride-2 step between levels).", check=_check_mults)
    unet_groups: int = option(8, help="GroupNorm groups (divides every U-Net width).",
                              check=positive)
    unet_attention_at: int = option(8, help="Self-attention at the U-Net levels whose side is at "
                                    "most this (and always in the middle).", check=positive)
    stop_grad: bool = option(True, help="Detach the FPA canvas before the U-Net (no gradient from "
                             "the U-Net reaches the FPA).")
    unet_residual: bool = option(False, help="Output tanh(W + UNet(image)) with the U-Net's last "
                                 "layer zero-initialised, so stage 2 starts from the FPA's images; "
                                 "default: tanh(UNet(image)) as the authors' code.")
    painter_from_ema: bool = option(True, help="When G.painter is frozen (train.freeze), G takes "
                                    "the EMA G's painter at step 0: after train.init_from that "
                                    "is stage 1's EMA painter, the one its samples came from.")


class FPAUNet(memcore.Generator):
    """The ``fpa-unet`` generator: ``painter`` (the FPA) then ``unet``; output tanh(UNet(image)),
    or tanh(W + UNet(image)) with ``unet_residual`` (image = the painter's output, W its canvas)."""

    def __init__(self, options: FPAUNetOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        height, width = painter_shape(o, ctx)
        levels = len(o.unet_mults)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise memcore.MemcoreError(
                f"generator.unet_mults = {list(o.unet_mults)}: {levels} levels halve the image "
                f"{levels - 1} times, but {height}x{width} is not divisible by {2 ** (levels - 1)}")
        bad = [o.unet_width * m for m in o.unet_mults if (o.unet_width * m) % o.unet_groups]
        if bad:
            raise memcore.MemcoreError(f"generator.unet_groups = {o.unet_groups} does not divide "
                                       f"the U-Net widths {bad}")
        sides = [min(height, width) // 2 ** i for i in range(levels)]
        attended = [o.unet_width * m for i, (m, side) in enumerate(zip(o.unet_mults, sides))
                    if side <= o.unet_attention_at or i == levels - 1]    # the middle attends too
        split = [w for w in attended if w % HEADS]
        if split:
            raise memcore.MemcoreError(
                f"generator.unet_width = {o.unet_width}: the U-Net's self-attention splits its "
                f"widths into {HEADS} heads, but {split} is not divisible by {HEADS} (choose "
                "unet_width and unet_mults whose products there are multiples of 4)")
        self.z_dim, self.num_classes = o.z_dim, 0
        self.stop_grad, self.painter_from_ema = o.stop_grad, o.painter_from_ema
        self.residual = o.unet_residual
        self.data_side, self.where = ctx.resolution, ctx.role or "generator"
        self.painter = Painter(o, ctx.channels, height, width)
        self.unet = UNet(ctx.channels, min(height, width), o.unet_width, tuple(o.unet_mults),
                         o.unet_groups, o.unet_attention_at)
        if self.residual:
            nn.init.zeros_(self.unet.head[-1].weight)
            nn.init.zeros_(self.unet.head[-1].bias)

    def on_build(self, models) -> None:
        check_canvas(self.painter.o, self.data_side, self.where)

    def before_phase(self, ctx):
        frozen = {"G", "G.painter"} & set(ctx.recipe.train.freeze)
        if ctx.step == 0 and frozen and self.painter_from_ema and ctx.models.G_ema is not None:
            with torch.no_grad():   # idempotent: every phase of step 0 copies the same weights
                self.painter.load_state_dict(ctx.models.G_ema.painter.state_dict())

    def refine(self, canvas):
        """W_T (before the painter's output tanh) -> the refined image."""
        if self.stop_grad:
            canvas = canvas.detach()
        refined = self.unet(self.painter.finish(canvas))
        return (canvas + refined if self.residual else refined).tanh()

    def forward(self, z):
        return self.refine(self.painter.canvas(z))
