"""memoryGAN's CIFAR-10 networks, as the authors' TF code builds them (notes: reference-code.md
2.6): the WGAN-GP ResNet of Gulrajani et al. with layer norm and ELU, 128 channels throughout.

Inference network mu (the DMN's D backbone), 32 px -> key (B, key_dim)::

    h = ELU(conv3x3(x))                                    32x32
    h = ELU(LN(conv3x3-meanpool(h) + conv1x1-meanpool(x)))  16x16   [block slot 16]
    h = block(h, "down"); block(h, None); block(h, None)    8x8     [block slot 8]
    key = mean_HW(conv4x4 stride 2 (h))                     4x4 -> (B, key_dim)

Generator, z (B, z_dim) -> image (B, channels, 32, 32)::

    h = ELU(LN(fc(z) as (width, 4, 4)))                     [block slot 4]
    h = block(h, "up") x 3                                  8, 16, 32 [block slots 8, 16, 32]
    x = tanh(conv3x3(h))

A residual block (post-activation, as the code: the first conv uses batch norm, the slim arg-scope
default, and the block output uses layer norm)::

    block(x) = ELU(LN(shortcut(x) + conv2(ELU(BN(conv1(x))))))

    resample  conv1                 conv2                  shortcut
    "down"    conv3x3               conv3x3 + meanpool 2x2 conv1x1 + meanpool 2x2
    "up"      upsample + conv3x3    conv3x3                upsample + conv1x1
    None      conv3x3               conv3x3                identity

"upsample" is the code's depth-to-space of the channel-tiled tensor (``tf.depth_to_space`` of
``concat([x, x, x, x], channels)``), which equals nearest-neighbour x2 upsampling and is computed
so; "meanpool" is the mean of the four 2x2 phases. LN is ``tf.contrib.layers.layer_norm`` (begin_norm_axis=1,
begin_params_axis=-1): per sample, mean and biased variance over (C, H, W), variance epsilon
1e-12, then a per-channel scale (init 1) and offset (init 0). Every fc/conv weight: truncated
normal, std 0.02 (cut at 2 std), bias 0, as the code's initialiser. Convs are 'SAME' padded.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import memcore
from memcore import MemcoreError, option, positive

from .init import init_weights

RESOLUTION = 32  # the code's CIFAR-10 networks: 32 -> 16 -> 8 (D), 4 -> 8 -> 16 -> 32 (G)


def check_resolution(ctx: memcore.BuildContext, what: str) -> None:
    if ctx.resolution != RESOLUTION:
        raise MemcoreError(f"{what} is memoryGAN's CIFAR-10 ResNet and needs {RESOLUTION} px images "
                           f"(any number of channels), got {ctx.resolution} px; use the DCGAN-style "
                           "networks (backbone = \"dcgan\" / the base plugin's dcgan) for other sizes")


# -- layers -----------------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    """tf.contrib.layers.layer_norm on an image batch: normalise each sample over (C, H, W),
    then a per-channel affine. (B, C, H, W) -> same."""

    def __init__(self, channels: int, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[1:], eps=self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def upsample(x: torch.Tensor) -> torch.Tensor:
    """The code's upsampling, ``tf.depth_to_space`` of the 4x channel-tiled tensor, which is
    nearest-neighbour x2 (tested against TF's index formula); (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ConvMeanPool(nn.Sequential):
    """'SAME' conv, then the mean of the four 2x2 phases (average pooling)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.AvgPool2d(2))


class UpsampleConv(nn.Module):
    """Depth-to-space of the channel-tiled input (nearest x2), then a 'SAME' conv."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(upsample(x))


class ResidualBlock(nn.Module):
    """ELU(LN(shortcut(x) + conv2(ELU(BN(conv1(x)))))); resample "down", "up" or None."""

    def __init__(self, cin: int, cout: int, resample: Optional[str], batch_norm: bool = True):
        super().__init__()
        if resample == "down":
            self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
            self.conv2 = ConvMeanPool(cin, cout, 3)
            self.shortcut = ConvMeanPool(cin, cout, 1)
            mid = cin
        elif resample == "up":
            self.conv1 = UpsampleConv(cin, cout, 3)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.shortcut = UpsampleConv(cin, cout, 1)
            mid = cout
        elif resample is None:
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
            mid = cout
        else:
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}")
        self.norm1 = nn.BatchNorm2d(mid) if batch_norm else nn.Identity()
        self.norm_out = LayerNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.elu(self.norm1(self.conv1(x))))
        return F.elu(self.norm_out(self.shortcut(x) + h))


# -- inference network (D backbone) -----------------------------------------------------------
class ResNetEncoder(nn.Module):
    """The code's CIFAR-10 inference network mu: (B, C, 32, 32) -> un-normalised key (B, key_dim).

    Offers block slots at 16 (after the first, downsampling stage) and 8 (after the residual
    blocks, before the key conv)."""

    def __init__(self, key_dim: int, width: int, batch_norm: bool, ctx: memcore.BuildContext,
                 what: str = "discriminator 'memorygan' with backbone = \"resnet\""):
        super().__init__()
        check_resolution(ctx, what)
        self.conv_in = nn.Conv2d(ctx.channels, width, 3, padding=1)
        self.stem = ConvMeanPool(width, width, 3)
        self.stem_shortcut = ConvMeanPool(ctx.channels, width, 1)
        self.stem_norm = LayerNorm2d(width)
        self.res = nn.Sequential(ResidualBlock(width, width, "down", batch_norm),
                                 ResidualBlock(width, width, None, batch_norm),
                                 ResidualBlock(width, width, None, batch_norm))
        self.to_key = nn.Conv2d(width, key_dim, 4, stride=2, padding=1)
        self.slots = ctx.block_slots({16: width, 8: width})
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(F.elu(self.conv_in(x)))
        h = F.elu(self.stem_norm(h + self.stem_shortcut(x)))              # (B, w, 16, 16)
        h = self.slots(8, self.res(self.slots(16, h)))                    # (B, w, 8, 8)
        return self.to_key(h).mean((2, 3))                                # (B, key_dim)


# -- generator --------------------------------------------------------------------------------
@memcore.config
class ResNetGeneratorOptions:
    z_dim: int = option(128, help="Latent size (set to key_dim + z_dim when wrapped by "
                        "generator 'memorygan' through [generator.inner]).", check=positive)
    width: int = option(128, help="Channels of every layer (code: 128).", check=positive)
    batch_norm: bool = option(True, help="BatchNorm after the first conv of every residual block "
                              "(the code's slim default); false: none.")


class ResNetGenerator(memcore.Generator):
    """The code's CIFAR-10 generator (``base_g``): fc -> 4x4, three residual up-blocks, tanh.

    Block slots at 4, 8, 16 and 32 (after the fc stage and after each up-block)."""

    num_classes = 0

    def __init__(self, options: ResNetGeneratorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        check_resolution(ctx, f"{ctx.role or 'generator'} 'memorygan-resnet'")
        self.z_dim, self.width = o.z_dim, o.width
        self.fc = nn.Linear(o.z_dim, o.width * 4 * 4)
        self.fc_norm = LayerNorm2d(o.width)
        self.ups = nn.ModuleList(ResidualBlock(o.width, o.width, "up", o.batch_norm)
                                 for _ in range(3))
        self.to_image = nn.Conv2d(o.width, ctx.channels, 3, padding=1)
        self.slots = ctx.block_slots({4: o.width, 8: o.width, 16: o.width, 32: o.width})
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.elu(self.fc_norm(self.fc(z).view(-1, self.width, 4, 4)))
        h = self.slots(4, h)
        for size, block in zip((8, 16, 32), self.ups):
            h = self.slots(size, block(h))
        return torch.tanh(self.to_image(h))
