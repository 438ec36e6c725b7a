"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with limited data").

Every image D sees (real or fake, both phases) goes through the same stochastic pipeline; each
transform is applied to each image independently with probability ``p``. ``p`` adapts: the
companion loss ``ada-stats`` hands in sign(D(real)) from every D pass; every ``interval`` D passes
the mean r_t (all-reduced over processes, so every rank gets the same p) is compared with
``target`` and p moves by sign(r_t - target) * images / (speed_kimg * 1000), i.e. from 0 to 1 in
``speed_kimg`` thousand images at most.

``p`` and the accumulators are buffers: they are saved in checkpoints and a resumed run continues
with exactly the same p (stylegan2-ada-pytorch resets it to 0 on resume).

Transforms (stylegan2-ada's 'bgc' pipeline, plain PyTorch): pixel blitting (x-flip, 90° rotations,
integer translation), general geometric (isotropic scaling, pre-rotation, anisotropic scaling,
post-rotation, fractional translation) composed into one affine matrix applied with one
``grid_sample`` (bilinear, reflection padding), and colour (brightness, contrast, luma flip, hue
rotation, saturation) composed into one 4x4 colour matrix. Randomness: torch's global RNG (saved
per rank by the core).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import memcore
from memcore import dist, in_range, option, positive

Transform = Literal["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                    "brightness", "contrast", "lumaflip", "hue", "saturation"]
BLIT = ("xflip", "rotate90", "xint")
GEOM = ("scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


@memcore.config
class ADAOptions:
    transforms: list[Transform] = option(factory=lambda: list(BLIT + GEOM + COLOR),
                                         help="Transforms in the pipeline (default: 'bgc').")
    p: float = option(0.0, help="Initial augmentation probability.", check=in_range(0.0, 1.0))
    adaptive: bool = option(True, help="Adapt p from sign(D(real)) (needs the 'ada-stats' loss); "
                            "false: fixed p.")
    target: float = option(0.6, help="Target of r_t = E[sign(D(real))].", check=in_range(0.0, 1.0))
    interval: int = option(4, help="D passes between p updates.", check=positive)
    speed_kimg: float = option(500.0, help="Thousands of images for p to move by 1.",
                               check=positive)
    xint_max: float = option(0.125, help="Integer translation range, fraction of the side.",
                             check=in_range(0.0, 1.0))
    scale_std: float = option(0.2, help="log2 stddev of isotropic scaling.", check=positive)
    rotate_max: float = option(1.0, help="Rotation range, fraction of a half turn.",
                               check=in_range(0.0, 1.0))
    aniso_std: float = option(0.2, help="log2 stddev of anisotropic scaling.", check=positive)
    xfrac_std: float = option(0.125, help="Fractional translation stddev, fraction of the side.",
                              check=positive)
    brightness_std: float = option(0.2, help="Brightness offset stddev.", check=positive)
    contrast_std: float = option(0.5, help="log2 stddev of contrast.", check=positive)
    hue_max: float = option(1.0, help="Hue rotation range, fraction of a half turn.",
                            check=in_range(0.0, 1.0))
    saturation_std: float = option(1.0, help="log2 stddev of saturation.", check=positive)


# -- homogeneous matrices, (B, 3, 3) in normalised image coordinates [-1, 1] ---------------------
def _eye(b: int, n: int, device) -> torch.Tensor:
    return torch.eye(n, device=device).expand(b, n, n).clone()


def translate2d(tx, ty):
    m = _eye(len(tx), 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx, sy):
    m = _eye(len(sx), 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(theta):
    m = _eye(len(theta), 3, theta.device)
    m[:, 0, 0], m[:, 0, 1] = theta.cos(), -theta.sin()
    m[:, 1, 0], m[:, 1, 1] = theta.sin(), theta.cos()
    return m


def _gate(values, p: float, neutral):
    """Per image (dim 0): ``values`` with probability p, else the neutral value (no transform)."""
    keep = torch.rand(values.shape[0], device=values.device) < p
    keep = keep.view(-1, *([1] * (values.dim() - 1)))
    return torch.where(keep, values, torch.full_like(values, neutral))


class ADA(nn.Module):
    def __init__(self, options: ADAOptions, ctx: memcore.BuildContext | None = None):
        super().__init__()
        self.options = options
        self.register_buffer("p", torch.tensor(float(options.p), dtype=torch.float64))
        # sum of sign(D(real)) and number of reals since the last update, on this process
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("passes", torch.zeros((), dtype=torch.long))
        self.register_buffer("rt", torch.zeros((), dtype=torch.float64))  # last r_t, for logs

    # -- adaptation ----------------------------------------------------------------------------
    def on_build(self, models) -> None:
        if self.options.adaptive and not any(getattr(l, "feeds_ada", False) for l in models.losses):
            raise memcore.MemcoreError(
                "augment 'ada' with adaptive = true needs the loss that feeds it: add [[losses]] "
                "kind = \"ada-stats\" (or set augment.adaptive = false for a fixed p)")

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add sign(D(real)) of one (micro-)batch."""
        self.sign_sum += real_logits.detach().sign().sum().double()
        self.sign_count += real_logits.numel()

    def after_phase(self, ctx) -> None:
        if ctx.pass_name != "D" or not self.options.adaptive:
            return
        self.passes += 1
        if int(self.passes) % self.options.interval == 0:
            self.update()

    @torch.no_grad()
    def update(self) -> None:
        """One p step from the statistics of every process (the same p on every rank)."""
        o = self.options
        stats = dist.all_reduce_mean(torch.stack([self.sign_sum, self.sign_count]))
        total, count = float(stats[0]), float(stats[1])
        self.sign_sum.zero_()
        self.sign_count.zero_()
        if count == 0:
            return
        images = count * dist.world_size()
        self.rt.fill_(total / count)
        step = math.copysign(1.0, total / count - o.target) * images / (o.speed_kimg * 1000)
        self.p.copy_((self.p + step).clamp(0.0, 1.0))

    # -- augmentation --------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if p <= 0:
            return images
        names = set(self.options.transforms)
        images = self.geometric(images, p, names)
        return self.color(images, p, names)

    def geometric(self, x: torch.Tensor, p: float, names) -> torch.Tensor:
        """x (B, C, H, W): one affine matrix per image, applied with one grid_sample."""
        o, b, dev = self.options, x.shape[0], x.device
        h, w = x.shape[2], x.shape[3]
        g = _eye(b, 3, dev)                 # maps output coordinates to input coordinates
        if "xflip" in names:
            flip = _gate(torch.randint(2, (b,), device=dev).float(), p, 0.0)
            g = g @ scale2d(1 - 2 * flip, torch.ones(b, device=dev))
        if "rotate90" in names:
            quarter = _gate(torch.randint(4, (b,), device=dev).float(), p, 0.0)
            g = g @ rotate2d(math.pi / 2 * quarter)
        if "xint" in names:
            t = _gate((torch.rand(b, 2, device=dev) * 2 - 1) * o.xint_max, p, 0.0)
            # whole pixels; one pixel is 2/side in normalised coordinates
            g = g @ translate2d((t[:, 0] * w).round() * 2 / w, (t[:, 1] * h).round() * 2 / h)
        if "scale" in names:
            s = _gate(torch.exp2(torch.randn(b, device=dev) * o.scale_std), p, 1.0)
            g = g @ scale2d(1 / s, 1 / s)
        # two rotations, each with 1 - sqrt(1 - p), so that one of them happens with p
        p_rot = 1 - math.sqrt(max(1 - p, 0.0))
        if "rotate" in names:
            theta = _gate((torch.rand(b, device=dev) * 2 - 1) * math.pi * o.rotate_max, p_rot, 0.0)
            g = g @ rotate2d(-theta)
        if "aniso" in names:
            s = _gate(torch.exp2(torch.randn(b, device=dev) * o.aniso_std), p, 1.0)
            g = g @ scale2d(1 / s, s)
        if "rotate" in names:
            theta = _gate((torch.rand(b, device=dev) * 2 - 1) * math.pi * o.rotate_max, p_rot, 0.0)
            g = g @ rotate2d(-theta)
        if "xfrac" in names:
            t = _gate(torch.randn(b, 2, device=dev) * o.xfrac_std, p, 0.0)
            g = g @ translate2d(t[:, 0] * 2, t[:, 1] * 2)
        if torch.equal(g, _eye(b, 3, dev)):
            return x
        grid = F.affine_grid(g[:, :2, :].to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def color(self, x: torch.Tensor, p: float, names) -> torch.Tensor:
        """x (B, C, H, W): one 4x4 colour matrix per image (RGB; grey uses its mean row)."""
        o, b, dev = self.options, x.shape[0], x.device
        if not names & set(COLOR):
            return x
        m = _eye(b, 4, dev)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)
        luma_outer = torch.outer(luma, luma)                          # projector on the grey axis
        if "brightness" in names:
            shift = _gate(torch.randn(b, device=dev) * o.brightness_std, p, 0.0)
            t = _eye(b, 4, dev)
            t[:, :3, 3] = shift[:, None]
            m = t @ m
        if "contrast" in names:
            c = _gate(torch.exp2(torch.randn(b, device=dev) * o.contrast_std), p, 1.0)
            m = torch.diag_embed(torch.stack([c, c, c, torch.ones_like(c)], dim=1)) @ m
        if "lumaflip" in names and x.shape[1] == 3:
            flip = _gate(torch.randint(2, (b,), device=dev).float(), p, 0.0)
            m = (_eye(b, 4, dev) - 2 * luma_outer * flip[:, None, None]) @ m
        if "hue" in names and x.shape[1] == 3:
            theta = _gate((torch.rand(b, device=dev) * 2 - 1) * math.pi * o.hue_max, p, 0.0)
            m = _rotate_about(luma[:3], theta) @ m
        if "saturation" in names and x.shape[1] == 3:
            s = _gate(torch.exp2(torch.randn(b, device=dev) * o.saturation_std), p, 1.0)
            m = (luma_outer + (torch.eye(4, device=dev) - luma_outer) * s[:, None, None]) @ m
        m = m.to(x.dtype)
        bsz, c, h, w = x.shape
        if c == 3:
            flat = m[:, :3, :3] @ x.reshape(b, 3, h * w) + m[:, :3, 3:]
            return flat.reshape(bsz, c, h, w)
        # grey: the mean of the RGB rows acting on (v, v, v)
        row = m[:, :3, :].mean(dim=1)                                  # (B, 4)
        return x * row[:, :3].sum(dim=1)[:, None, None, None] + row[:, 3][:, None, None, None]


def _rotate_about(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) rotations by ``theta`` about the unit 3-vector ``axis`` (Rodrigues)."""
    b = theta.shape[0]
    ax, ay, az = axis.tolist()
    k = torch.tensor([[0.0, -az, ay], [az, 0.0, -ax], [-ay, ax, 0.0]], device=theta.device)
    sin, cos = theta.sin()[:, None, None], theta.cos()[:, None, None]
    r = torch.eye(3, device=theta.device) + sin * k + (1 - cos) * (k @ k)
    m = _eye(b, 4, theta.device)
    m[:, :3, :3] = r
    return m
