"""StyleGAN2 generator (skip architecture) and discriminator (residual), in plain PyTorch.

Follows stylegan2-ada-pytorch's ``training/networks.py`` (Karras et al. 2020) without its custom CUDA
ops: ``bias_act`` is a bias add + leaky ReLU + clamp, ``upfirdn2d`` is a depthwise (transposed)
convolution with the [1, 3, 3, 1] filter. Every weight uses the equalised learning rate (stored
as N(0, 1), scaled by 1/sqrt(fan_in) at run time).

Block slots: the synthesis network offers one slot per resolution, applied to the features of the
block before its toRGB (so an attention block at 16 px changes the 16 px RGB contribution too); the
discriminator offers one slot per resolution, applied to the features entering the block at that
resolution (4: entering the epilogue).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

import memcore
from memcore import in_range, option, positive

SQRT2 = math.sqrt(2.0)

# stylegan2-ada-pytorch train.py cfg_specs, network side (fmaps x 32768 = channel_base). The
# training side (lr, gamma, EMA, batch) is in the recipes and the README.
PRESETS = {
    "stylegan2": dict(channel_base=32768, mapping_layers=8, style_mixing=0.9, mbstd_group=4,
                      architecture="resnet"),
    "paper256": dict(channel_base=16384, mapping_layers=8, style_mixing=0.9, mbstd_group=8,
                     architecture="resnet"),
    # cifar: 2 mapping layers, no style mixing, and the 'orig' D (no residual skips).
    "cifar": dict(channel_base=32768, mapping_layers=2, style_mixing=0.0, mbstd_group=32,
                  architecture="orig"),
}
Preset = Literal["stylegan2", "paper256", "cifar"]


def _preset(options, name: str):
    """The option if given, else the preset's value."""
    value = getattr(options, name)
    return PRESETS[options.preset][name] if value is None else value


def _resolutions(resolution: int) -> list[int]:
    """4, 8, ..., resolution; the image side must be a power of two."""
    if resolution < 8 or resolution > 1024 or resolution & (resolution - 1):
        raise memcore.MemcoreError(
            f"stylegan2 needs a power-of-two image side from 8 to 1024 (data.resolution = "
            f"{resolution}); set data.resolution = 32 for 28 px datasets")
    return [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]


# -- ops ---------------------------------------------------------------------------------------
def fir_filter() -> torch.Tensor:
    """The [1, 3, 3, 1] outer-product filter, normalised to sum 1 (4, 4)."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = f[:, None] * f[None, :]
    return f / f.sum()


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): zero insertion + FIR filter (gain 4), as upfirdn2d."""
    c = x.shape[1]
    return F.conv_transpose2d(x, (f * 4).expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/2, W/2): FIR filter then keep every second pixel."""
    c = x.shape[1]
    return F.conv2d(x, f.expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def blur(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H-1, W-1): the FIR filter before a stride-2 3x3 convolution."""
    c = x.shape[1]
    return F.conv2d(x, f.expand(c, 1, 4, 4), padding=1, groups=c)


def bias_act(x, bias, act: bool, gain: float = 1.0, clamp: Optional[float] = None):
    """Bias, optional leaky ReLU (0.2) with gain sqrt(2), extra gain, optional clamp."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    if act:
        x = F.leaky_relu(x, 0.2)
    gain = gain * (SQRT2 if act else 1.0)
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp * gain, clamp * gain)
    return x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, padding: int = 0) -> torch.Tensor:
    """Conv with the per-sample weight W_b = W * s_b (scaled per input channel), demodulated.

    x (B, I, H, W), weight (O, I, k, k), styles (B, I). Computed as scale input -> shared conv ->
    scale output (stylegan2-ada's non-fused path), which equals a conv per sample with W_b.
    """
    x = x * styles[:, :, None, None]
    x = F.conv2d(x, weight, padding=padding)
    if demodulate:
        # 1 / |W_b[o]| for every sample and output channel: (B, O)
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()
        x = x * dcoefs[:, :, None, None]
    return x


def minibatch_std(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the stddev over groups of ``group_size`` *consecutive* samples as extra channels.

    Consecutive (not strided, as in stylegan2-ada) because memcore's D phase calls D once on
    cat([real, fake]): with a group size dividing the per-process batch, no group mixes real and
    fake images. The group size is reduced to gcd(N, group_size) when it does not divide N.
    """
    n, c, h, w = x.shape
    g = math.gcd(n, group_size)
    y = x.reshape(n // g, g, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)        # (n/g, F, c/F, H, W)
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])                          # (n/g, F)
    y = y[:, None, :, None, None].expand(n // g, g, num_channels, h, w).reshape(n, num_channels, h, w)
    return torch.cat([x, y], dim=1)


# -- layers ------------------------------------------------------------------------------------
class FullyConnected(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, act: bool = False, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_dim)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return bias_act(x, None, self.act)


class Conv(nn.Module):
    """Equalised-lr convolution; ``down`` filters then strides by 2 (stylegan2's conv2d_resample)."""

    def __init__(self, cin: int, cout: int, kernel: int, act: bool = True, down: bool = False,
                 bias: bool = True, conv_clamp: Optional[float] = None):
        super().__init__()
        self.act, self.down, self.conv_clamp, self.kernel = act, down, conv_clamp, kernel
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_gain = 1 / math.sqrt(cin * kernel * kernel)
        if down:
            self.register_buffer("resample_filter", fir_filter())

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if not self.down:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        elif self.kernel == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w)
        else:
            x = F.conv2d(blur(x, self.resample_filter), w, stride=2, padding=self.kernel // 2)
        return bias_act(x, self.bias, self.act, gain, self.conv_clamp)


class Mapping(nn.Module):
    """z (and a class embedding) -> w, broadcast to ``num_ws`` layers; tracks the mean w."""

    def __init__(self, z_dim: int, num_classes: int, w_dim: int, num_ws: int, layers: int,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.num_classes, self.num_ws, self.w_avg_beta = num_classes, num_ws, w_avg_beta
        self.embed = FullyConnected(num_classes, w_dim) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.net = nn.Sequential(*(FullyConnected(a, b, act=True, lr_multiplier=lr_multiplier)
                                   for a, b in zip(dims[:-1], dims[1:])))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor] = None,
                truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        parts = [normalize_2nd_moment(z)] if z is not None and z.shape[1] else []
        if self.embed is not None:
            onehot = F.one_hot(c, self.num_classes).to(self.embed.weight.dtype)
            parts.append(normalize_2nd_moment(self.embed(onehot)))
        w = self.net(torch.cat(parts, dim=1))                          # (B, w_dim)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().to(self.w_avg.dtype).mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)                 # (B, num_ws, w_dim)
        if truncation_psi != 1.0:
            ws = self.w_avg.lerp(ws, truncation_psi)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally after a 2x FIR upsample), noise, bias, leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        if up:
            self.register_buffer("resample_filter", fir_filter())

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        styles = self.affine(w)                                        # (B, cin)
        if self.up:
            x = upsample2d(x, self.resample_filter)
        x = modulated_conv2d(x, self.weight, styles, padding=1)
        if noise_mode == "random":
            r = self.resolution
            x = x + torch.randn(x.shape[0], 1, r, r, device=x.device, dtype=x.dtype) \
                * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return bias_act(x, self.bias, True, clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation (its style carries the 1/sqrt(fan_in) gain)."""

    def __init__(self, cin: int, cout: int, w_dim: int, conv_clamp: Optional[float]):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.weight_gain = 1 / math.sqrt(cin)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv) + conv, and its toRGB."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.resolution = resolution
        if cin == 0:
            self.const = nn.Parameter(torch.randn(cout, resolution, resolution))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(cin, cout, w_dim, resolution, True, conv_clamp)
        self.conv1 = SynthesisLayer(cout, cout, w_dim, resolution, False, conv_clamp)
        self.torgb = ToRGB(cout, img_channels, w_dim, conv_clamp)
        self.num_conv = 1 if cin == 0 else 2
        self.register_buffer("resample_filter", fir_filter())

    def features(self, x: Optional[torch.Tensor], ws: torch.Tensor, noise_mode: str):
        """ws (B, num_conv, w_dim) -> features (B, cout, res, res)."""
        if self.conv0 is None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            return self.conv1(x, ws[:, 0], noise_mode)
        x = self.conv0(x, ws[:, 0], noise_mode)
        return self.conv1(x, ws[:, 1], noise_mode)

    def image(self, x: torch.Tensor, img: Optional[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        """Skip architecture: upsampled image so far + this resolution's RGB."""
        rgb = self.torgb(x, w)
        rgb = rgb.to(torch.promote_types(rgb.dtype, torch.float32))  # the skip image in >= fp32
        return rgb if img is None else upsample2d(img, self.resample_filter) + rgb


class Synthesis(nn.Module):
    def __init__(self, channels: dict[int, int], w_dim: int, img_channels: int,
                 conv_clamp: Optional[float], ctx: memcore.BuildContext):
        super().__init__()
        self.resolutions = sorted(channels)
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels.get(r // 2, 0) if r > 4 else 0, channels[r], w_dim, r,
                           img_channels, conv_clamp) for r in self.resolutions)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        self.slots = ctx.block_slots(channels)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> images (B, C, R, R)."""
        x = img = None
        w_idx = 0
        for res, block in zip(self.resolutions, self.blocks):
            x = block.features(x, ws[:, w_idx:w_idx + block.num_conv], noise_mode)
            x = self.slots(res, x)
            w_idx += block.num_conv
            # toRGB shares its w with the next block's first conv (stylegan2-ada's indexing)
            img = block.image(x, img, ws[:, w_idx])
        return img


# -- generator ---------------------------------------------------------------------------------
@memcore.config
class GeneratorOptions:
    preset: Preset = option("paper256", help="stylegan2-ada configuration the defaults come from "
                            "(an explicit option below overrides it).")
    z_dim: int = option(512, help="Latent size.", check=positive)
    w_dim: int = option(512, help="Intermediate latent (style) size.", check=positive)
    channel_base: Optional[int] = option(None, help="Channels at resolution r are "
                                         "min(channel_base / r, channel_max); preset: 16384 "
                                         "(paper256) or 32768 (cifar, stylegan2).", check=positive)
    channel_max: int = option(512, help="Cap on channels per resolution.", check=positive)
    mapping_layers: Optional[int] = option(None, help="Mapping network depth (preset: 8; cifar 2).",
                                           check=positive)
    mapping_lr: float = option(0.01, help="Learning-rate multiplier of the mapping network.",
                               check=positive)
    style_mixing: Optional[float] = option(None, help="Probability of mixing two latents in a "
                                           "training batch (preset: 0.9; cifar 0).",
                                           check=in_range(0.0, 1.0))
    conv_clamp: Optional[float] = option(256.0, help="Clamp of conv outputs (stylegan2-ada: 256).",
                                         check=positive)
    conditional: bool = option(True, help="Use labels when the dataset has them.")
    eval_noise: Literal["random", "const", "none"] = option(
        "const", help="Noise inputs in eval mode (EMA samples, metrics; training uses random). "
        "const draws nothing from the global RNG, so sampling never changes training.")


class Generator(memcore.Generator):
    def __init__(self, options: GeneratorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        resolutions = _resolutions(ctx.resolution)
        self.z_dim, self.w_dim = o.z_dim, o.w_dim
        self.num_classes = ctx.num_classes if o.conditional else 0
        self.style_mixing = _preset(o, "style_mixing")
        self.eval_noise = o.eval_noise
        base = _preset(o, "channel_base")
        _check_channel_base(ctx.role or "generator", base, ctx.resolution)
        channels = {r: min(base // r, o.channel_max) for r in resolutions}
        self.synthesis = Synthesis(channels, o.w_dim, ctx.channels, o.conv_clamp, ctx)
        self.num_ws = self.synthesis.num_ws
        self.mapping = Mapping(o.z_dim, self.num_classes, o.w_dim, self.num_ws,
                               _preset(o, "mapping_layers"), o.mapping_lr)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None,
                truncation_psi: float = 1.0, noise_mode: Optional[str] = None,
                return_ws: bool = False):
        """z (B, z_dim) -> images (B, C, R, R) (not squashed: stylegan2 has no tanh);
        with ``return_ws`` also the per-layer styles (B, num_ws, w_dim) (path-length term)."""
        ws = self.mapping(z, c, truncation_psi, update_w_avg=self.training)
        if self.training and self.style_mixing > 0:
            ws = self.mix_styles(ws, z, c)
        if return_ws and not ws.requires_grad:  # frozen mapping: the path-length term needs d/dws
            ws = ws.detach().requires_grad_(True)
        img = self.synthesis(ws, noise_mode or ("random" if self.training else self.eval_noise))
        return (img, ws) if return_ws else img

    def mix_styles(self, ws: torch.Tensor, z: torch.Tensor, c) -> torch.Tensor:
        """With probability ``style_mixing``, layers from a random cutoff on take a second w."""
        cutoff = int(torch.randint(1, self.num_ws, ()))
        if float(torch.rand(())) >= self.style_mixing:
            return ws
        ws2 = self.mapping(torch.randn_like(z), c)
        layer = torch.arange(self.num_ws, device=ws.device)
        return torch.where((layer < cutoff)[None, :, None], ws, ws2)


# -- discriminator -----------------------------------------------------------------------------
class DiscriminatorBlock(nn.Module):
    """res -> res/2: conv, strided conv, plus (resnet) a 1x1 strided skip; both halves x sqrt(.5)."""

    def __init__(self, cin: int, cout: int, residual: bool, conv_clamp: Optional[float]):
        super().__init__()
        self.conv0 = Conv(cin, cin, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv(cin, cout, 3, down=True, conv_clamp=conv_clamp)
        self.skip = Conv(cin, cout, 1, act=False, down=True, bias=False) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip is None:
            return self.conv1(self.conv0(x))
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class Epilogue(nn.Module):
    """4x4: minibatch stddev, conv, fc, output (projected on the class map when conditional)."""

    def __init__(self, cin: int, cmap_dim: int, mbstd_group: int, mbstd_channels: int,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.conv = Conv(cin + mbstd_channels, cin, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(cin * 16, cin, act=True)
        self.out = FullyConnected(cin, cmap_dim or 1)
        self.cmap_dim = cmap_dim

    def forward(self, x: torch.Tensor, cmap: Optional[torch.Tensor]) -> torch.Tensor:
        if self.mbstd_channels:
            x = minibatch_std(x, self.mbstd_group, self.mbstd_channels)
        x = self.out(self.fc(self.conv(x).flatten(1)))                 # (B, cmap_dim or 1)
        if cmap is not None:
            return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)
        return x.squeeze(1)


@memcore.config
class DiscriminatorOptions:
    preset: Preset = option("paper256", help="stylegan2-ada configuration the defaults come from.")
    channel_base: Optional[int] = option(None, help="Channels at resolution r are "
                                         "min(channel_base / r, channel_max) (preset).",
                                         check=positive)
    channel_max: int = option(512, help="Cap on channels per resolution.", check=positive)
    architecture: Optional[Literal["resnet", "orig"]] = option(
        None, help="'resnet' (residual skips) or 'orig' (plain; stylegan2-ada's cifar preset).")
    mbstd_group: Optional[int] = option(None, help="Minibatch-stddev group size (preset: 8 "
                                        "paper256, 32 cifar, 4 stylegan2); keep it a divisor of "
                                        "the per-process batch.", check=positive)
    mbstd_channels: int = option(1, help="Minibatch-stddev feature channels (0: off).",
                                 check=lambda v: None if v >= 0 else "a number >= 0")
    conv_clamp: Optional[float] = option(256.0, help="Clamp of conv outputs.", check=positive)
    conditional: bool = option(True, help="Projection on a class map when the data has labels.")
    mapping_layers: int = option(8, help="Depth of the label mapping network (conditional).",
                                 check=positive)


def _check_channel_base(role: str, base: int, resolution: int) -> None:
    """Channels at r are channel_base // r: below the image side that is 0 at the top."""
    if base < resolution:
        raise memcore.MemcoreError(
            f"{role}.channel_base = {base}: gives 0 channels at {resolution} px (channels are "
            f"channel_base / resolution); at least {resolution} for this data")


def _check_mbstd(group: int, mbstd_channels: int, channels: int, batch: int) -> None:
    """A group not dividing the batch would silently shrink to gcd(batch, group); one larger than
    the batch is the whole batch, as in stylegan2-ada."""
    if mbstd_channels and batch and batch % min(group, batch):
        raise memcore.MemcoreError(
            f"discriminator.mbstd_group = {group}: does not divide the per-process batch of {batch} "
            "images (train.batch_size / processes / train.micro_batches); choose a divisor")
    if mbstd_channels and channels % mbstd_channels:
        raise memcore.MemcoreError(
            f"discriminator.mbstd_channels = {mbstd_channels}: does not divide the {channels} "
            "channels of the 4x4 epilogue")


class Discriminator(memcore.Discriminator):
    def __init__(self, options: DiscriminatorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        resolutions = _resolutions(ctx.resolution)[::-1]               # R, R/2, ..., 4
        self.num_classes = ctx.num_classes if o.conditional else 0
        base = _preset(o, "channel_base")
        _check_channel_base("discriminator", base, ctx.resolution)
        channels = {r: min(base // r, o.channel_max) for r in resolutions}
        residual = _preset(o, "architecture") == "resnet"
        self.resolutions = resolutions[:-1]
        self.fromrgb = Conv(ctx.channels, channels[resolutions[0]], 1, conv_clamp=o.conv_clamp)
        self.blocks = nn.ModuleList(DiscriminatorBlock(channels[r], channels[r // 2], residual,
                                                       o.conv_clamp) for r in self.resolutions)
        self.slots = ctx.block_slots(channels)
        cmap_dim = channels[4] if self.num_classes else 0
        self.mapping = Mapping(0, self.num_classes, cmap_dim, 1, o.mapping_layers) \
            if self.num_classes else None
        group = _preset(o, "mbstd_group")
        _check_mbstd(group, o.mbstd_channels, channels[4], ctx.batch_size)
        self.epilogue = Epilogue(channels[4], cmap_dim, group, o.mbstd_channels, o.conv_clamp)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images (B, C, R, R) -> logits (B,)."""
        x = self.fromrgb(x)
        for res, block in zip(self.resolutions, self.blocks):
            x = block(self.slots(res, x))
        x = self.slots(4, x)
        cmap = None
        if self.mapping is not None:
            if c is None:
                raise memcore.MemcoreError("the conditional stylegan2 discriminator needs labels "
                                           "(set discriminator.conditional = false)")
            cmap = self.mapping(None, c)[:, 0]
        return self.epilogue(x, cmap)
