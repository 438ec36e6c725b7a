"""FastGAN (Liu et al. 2021) generator and discriminator, scalable from 32 to 256 px.

Generator: 4x4 start from z, up-blocks alternating "comp" (two convs with noise injection) and
"simple" (one conv), GLU activations, spectral norm on every conv, skip-layer excitation (SLE)
from a low-resolution stage into a stage `sle_span` times larger (16 in FastGAN at 256 px; 4 is
the CPU-scale choice at 32 px). A block slot follows every stage, after its SLE.

Discriminator: a big path (input -> 8x8 through DownBlockComp), a small path on the half-size image,
both ending in 5x5 logit maps; during the D phase it also decodes its 8x8 features (whole image,
small path) and a random quadrant of its 16x16 feature back to images for the self-supervised
reconstruction loss (see losses.py). It returns a dict: ``logits`` (B, 50) and, when decoding,
``rec_*`` with their ``target_*``.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import memcore
from memcore import option, positive

# channel multipliers per resolution (× width), FastGAN's nfc tables
G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
D_MULT = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}


def _check_resolution(resolution: int) -> None:
    if resolution < 32 or resolution > 1024 or resolution & (resolution - 1):
        raise memcore.MemcoreError(f"fastgan needs a power-of-two resolution in 32..1024; the "
                                   f"dataset gives {resolution} (set data.resolution)")


def _check_width(where: str, width: int, mult: dict, resolution: int) -> None:
    """Channels are int(multiplier x width): at the image side the multiplier is below 1 from
    256 px on, and a small width would leave that stage no channel."""
    if int(mult[resolution] * width) < 1:
        raise memcore.MemcoreError(
            f"{where}.width = {width}: gives 0 channels at {resolution} px (width x "
            f"{mult[resolution]}); at least {math.ceil(1 / mult[resolution])} for this data")


def power_of_two(v):
    return None if 1 <= v <= 1024 and not v & (v - 1) else "a power of two up to 1024 (1: no SLE)"


def sn_conv(*args, **kwargs):
    """Spectral-normalised conv with FastGAN's N(0, 0.02) init."""
    conv = nn.Conv2d(*args, **kwargs)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    return spectral_norm(conv)


def batch_norm(channels):
    bn = nn.BatchNorm2d(channels)
    nn.init.normal_(bn.weight, 1.0, 0.02)
    nn.init.zeros_(bn.bias)
    return bn


class GLU(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class NoiseInjection(nn.Module):
    """x + w·n with n ~ N(0, 1) of shape (B, 1, H, W) and a learned scalar w (0 at start)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, _, h, w = x.shape
        return x + self.weight * torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)


def up_simple(cin, cout):
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         sn_conv(cin, cout * 2, 3, 1, 1, bias=False), batch_norm(cout * 2), GLU())


def up_comp(cin, cout, noise: bool):
    inject = NoiseInjection if noise else nn.Identity
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         sn_conv(cin, cout * 2, 3, 1, 1, bias=False), inject(),
                         batch_norm(cout * 2), GLU(),
                         sn_conv(cout, cout * 2, 3, 1, 1, bias=False), inject(),
                         batch_norm(cout * 2), GLU())


class SkipExcitation(nn.Module):
    """SLE: a channel gate computed from a small feature map, multiplied into a large one."""

    def __init__(self, cin, cout):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), sn_conv(cin, cout, 4, 1, 0, bias=False),
                                  nn.SiLU(), sn_conv(cout, cout, 1, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, small, big):
        return big * self.gate(small)


@memcore.config
class GeneratorOptions:
    z_dim: int = option(256, help="Latent size (FastGAN: 256).", check=positive)
    width: int = option(64, help="ngf: channels = width × FastGAN's per-resolution multiplier.",
                        check=positive)
    max_width: int = option(1024, help="Cap on channels per stage.", check=positive)
    sle_span: int = option(16, help="SLE connects stage r to stage sle_span·r (FastGAN 16: 4->64, "
                           "8->128, ...; 4 suits 32 px: 4->16, 8->32; 1: no SLE).",
                           check=power_of_two)
    noise: bool = option(True, help="Noise injection in the comp up-blocks (upstream FastGAN; the "
                         "MoCA fork disables it).")
    output: Literal["tanh", "none"] = option("tanh", help="Output activation (FastGAN has none "
                                             "below 1024 px; images are clamped to [-1, 1] anyway).")


class Generator(memcore.Generator):
    def __init__(self, options: GeneratorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        _check_resolution(ctx.resolution)
        _check_width(ctx.role or "generator", o.width, G_MULT, ctx.resolution)
        self.z_dim, self.num_classes = o.z_dim, 0
        self.sizes = [2 ** i for i in range(2, int(math.log2(ctx.resolution)) + 1)]  # 4 ... R
        width = {r: min(int(G_MULT[r] * o.width), o.max_width) for r in self.sizes}
        self.start = nn.Sequential(nn.ConvTranspose2d(o.z_dim, width[4] * 2, 4, 1, 0, bias=False),
                                   batch_norm(width[4] * 2), GLU())
        nn.init.normal_(self.start[0].weight, 0.0, 0.02)
        self.start[0] = spectral_norm(self.start[0])
        # comp blocks at 8, 32, 128, ... ; simple blocks at 16, 64, 256, ...
        self.ups = nn.ModuleList(
            up_comp(width[r // 2], width[r], o.noise) if int(math.log2(r)) % 2 == 1
            else up_simple(width[r // 2], width[r]) for r in self.sizes[1:])
        self.sle_pairs = [(r, r * o.sle_span) for r in self.sizes if r * o.sle_span in width
                          and o.sle_span > 1]
        self.sle = nn.ModuleDict({str(dst): SkipExcitation(width[src], width[dst])
                                  for src, dst in self.sle_pairs})
        self.slots = ctx.block_slots({r: width[r] for r in self.sizes})
        self.to_image = sn_conv(width[ctx.resolution], ctx.channels, 3, 1, 1, bias=False)
        self.output = o.output

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.start(z.view(z.shape[0], -1, 1, 1))
        feats = {4: self.slots(4, x)}
        for r, up in zip(self.sizes[1:], self.ups):
            x = up(x)
            if str(r) in self.sle:
                x = self.sle[str(r)](feats[self._sle_source(r)], x)
            x = self.slots(r, x)
            feats[r] = x
        image = self.to_image(x)
        return torch.tanh(image) if self.output == "tanh" else image

    def _sle_source(self, dst: int) -> int:
        return next(src for src, d in self.sle_pairs if d == dst)


def down_block(cin, cout):
    return nn.Sequential(sn_conv(cin, cout, 4, 2, 1, bias=False), batch_norm(cout),
                         nn.LeakyReLU(0.2))


class DownBlockComp(nn.Module):
    """Main path (stride-2 conv, conv) averaged with a shortcut (avgpool, 1x1 conv)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.main = nn.Sequential(sn_conv(cin, cout, 4, 2, 1, bias=False), batch_norm(cout),
                                  nn.LeakyReLU(0.2), sn_conv(cout, cout, 3, 1, 1, bias=False),
                                  batch_norm(cout), nn.LeakyReLU(0.2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), sn_conv(cin, cout, 1, 1, 0, bias=False),
                                      batch_norm(cout), nn.LeakyReLU(0.2))

    def forward(self, x):
        return (self.main(x) + self.shortcut(x)) / 2


def decoder(cin, cout_image, out_size, width):
    """SimpleDecoder: pool to 8x8, up-blocks to ``out_size``, tanh."""
    layers = [nn.AdaptiveAvgPool2d(8)]
    c = cin
    for _ in range(int(math.log2(out_size // 8))):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   sn_conv(c, width * 2, 3, 1, 1, bias=False), batch_norm(width * 2), GLU()]
        c = width
    layers += [sn_conv(c, cout_image, 3, 1, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def quadrant(x: torch.Tensor, part: int) -> torch.Tensor:
    h, w = x.shape[2] // 2, x.shape[3] // 2
    top, left = (part // 2) * h, (part % 2) * w
    return x[:, :, top:top + h, left:left + w]


@memcore.config
class DiscriminatorOptions:
    width: int = option(64, help="ndf: channels = width × FastGAN's per-resolution multiplier.",
                        check=positive)
    max_width: int = option(1024, help="Cap on channels per stage.", check=positive)
    sle_span: int = option(8, help="Excitation from stage r into stage r / sle_span of the big "
                           "path (FastGAN: 8, e.g. 128->16; 4 suits 32 px: 32->8; 1: no SLE).",
                           check=power_of_two)
    decoder_width: int = option(32, help="Channels of the reconstruction decoders.",
                                check=positive)


class Discriminator(memcore.Discriminator):
    ddp_find_unused = True  # the decoders are idle in the G phase
    # for the gradient contract, which runs a plain forward
    unreached_parameters = {"decode_": "the reconstruction decoders run only in the D pass, for "
                            "the fastgan loss (before_phase sets decoding)"}

    def __init__(self, options: DiscriminatorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        _check_resolution(ctx.resolution)
        _check_width("discriminator", o.width, D_MULT, ctx.resolution)
        R = ctx.resolution
        self.num_classes = 0
        self.resolution, self.small = R, R // 2
        width = {r: min(int(D_MULT[r] * o.width), o.max_width) for r in D_MULT}
        big_sizes = [R // 2 ** i for i in range(int(math.log2(R // 8)) + 1)]   # R ... 8
        self.big_sizes = big_sizes
        self.stem = nn.Sequential(sn_conv(ctx.channels, width[R], 3, 1, 1, bias=False),
                                  nn.LeakyReLU(0.2))
        self.downs = nn.ModuleList(DownBlockComp(width[r], width[r // 2]) for r in big_sizes[:-1])
        self.sle_pairs = [(r, r // o.sle_span) for r in big_sizes if r // o.sle_span in big_sizes
                          and o.sle_span > 1 and r != R]
        self.sle = nn.ModuleDict({str(dst): SkipExcitation(width[src], width[dst])
                                  for src, dst in self.sle_pairs})
        self.slots = ctx.block_slots({r: width[r] for r in big_sizes})
        self.rf_big = nn.Sequential(sn_conv(width[8], width[4], 1, 1, 0, bias=False),
                                    batch_norm(width[4]), nn.LeakyReLU(0.2),
                                    sn_conv(width[4], 1, 4, 1, 0, bias=False))
        small_sizes = [self.small // 2 ** i for i in range(int(math.log2(self.small // 8)) + 1)]
        self.small_path = nn.Sequential(
            sn_conv(ctx.channels, width[small_sizes[1] if len(small_sizes) > 1 else 8], 4, 2, 1,
                    bias=False), nn.LeakyReLU(0.2),
            *[down_block(width[r], width[r // 2]) for r in small_sizes[1:-1]])
        self.rf_small = sn_conv(width[8], 1, 4, 1, 0, bias=False)
        rec = min(self.small, 128)
        self.rec_size = rec
        self.decode_big = decoder(width[8], ctx.channels, rec, o.decoder_width)
        self.decode_small = decoder(width[8], ctx.channels, rec, o.decoder_width)
        self.decode_part = decoder(width[16], ctx.channels, rec, o.decoder_width)
        self.decoding = False  # set in the D phase only (before_phase)

    def forward(self, x: torch.Tensor, c=None):
        feats = {}
        h = self.slots(self.resolution, self.stem(x))
        feats[self.resolution] = h
        for r, down in zip(self.big_sizes[1:], self.downs):
            h = down(h)
            if str(r) in self.sle:
                h = self.sle[str(r)](feats[self._sle_source(r)], h)
            h = self.slots(r, h)
            feats[r] = h
        small_image = F.interpolate(x, size=self.small, mode="bilinear", align_corners=False)
        small = self.small_path(small_image)
        logits = torch.cat([self.rf_big(h).flatten(1), self.rf_small(small).flatten(1)], dim=1)
        if not self.decoding:
            return {"logits": logits}
        part = int(torch.randint(4, ()))
        shrink = lambda img: F.interpolate(img, size=self.rec_size, mode="bilinear",
                                           align_corners=False)
        return {"logits": logits,
                "rec_big": self.decode_big(h), "target_big": shrink(x),
                "rec_small": self.decode_small(small), "target_small": shrink(small_image),
                "rec_part": self.decode_part(quadrant(feats[16], part)),
                "target_part": shrink(quadrant(x, part))}

    def _sle_source(self, dst: int) -> int:
        return next(src for src, d in self.sle_pairs if d == dst)

    def before_phase(self, ctx) -> None:
        """Decoders run only where the reconstruction loss needs them: the D phase."""
        self.decoding = ctx.phase == "D" and ctx.pass_name == "D"
