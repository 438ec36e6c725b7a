"""The LightGAN discriminator as the authors used it (lucidrains/lightweight-gan, sec. 3.3), scaled
by options for small images, and its two extra loss terms.

* Residual down-blocks: conv 4x4 stride 2 + conv 3x3 (LeakyReLU 0.1) summed with avg-pool + 1x1
  conv; no normalisation; linear attention (residual, pre-norm) before the blocks at the listed
  resolutions; logits head conv 1x1 + conv over the last feature map.
* A second head on the image resized to 32x32 (``logits_32``).
* Two decoders reconstruct the input from the last feature map and from a random quadrant of the
  one before, compared with the image (or quadrant) resized to the decoder's output (MSE).

Sign convention: lightweight-gan's D outputs **low for real**; its D loss is
relu(1 + D(real)) + relu(1 - D(fake)) and its G loss mean D(fake). Here both heads output
memcore's convention (high for real, i.e. minus lightweight-gan's value), which turns those into
the base plugin's ``hinge`` exactly; ``lightgan-aux`` adds the 32x32 head's hinge terms and the
reconstruction loss, ``lightgan-gp`` the penalty on reals every 4 steps (in that step's D update,
as the code).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

import memcore
from memcore import logits_of, option, positive

act = lambda: nn.LeakyReLU(0.1)


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), act(),
                                  nn.Conv2d(cout, cout, 3, padding=1), act())
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1), act())

    def forward(self, x):
        return self.main(x) + self.skip(x)


class LinearAttention(nn.Module):
    """Residual, pre-norm linear attention (softmax over keys' positions and queries' features)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 16):
        super().__init__()
        self.heads, inner = heads, heads * dim_head
        self.norm = nn.GroupNorm(1, dim)
        self.to_qkv = nn.Conv2d(dim, 3 * inner, 1, bias=False)
        self.out = nn.Conv2d(inner, dim, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(b, 3, self.heads, -1, h * w).unbind(1)  # (B, h, d, N)
        q, k = q.softmax(dim=-2), k.softmax(dim=-1)
        context = k @ v.transpose(-1, -2)                                                 # (B, h, d, d)
        y = context.transpose(-1, -2) @ q                                                 # (B, h, d, N)
        return x + self.out(y.reshape(b, -1, h, w))


class Decoder(nn.Module):
    """lightweight-gan's SimpleDecoder: (upsample x2, conv 3x3, GLU) per step, channels halving."""

    def __init__(self, cin: int, channels: int, upsamples: int):
        super().__init__()
        layers = []
        for i in range(upsamples):
            last = i == upsamples - 1
            cout = 2 * channels if last else max(cin // 2, 8)
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1), nn.GLU(dim=1)]
            cin = cout // 2
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@memcore.config
class LightGANOptions:
    width: int = option(16, help="Channels after the first down-block; doubled per block.",
                        check=positive)
    max_width: int = option(256, help="Cap on channels.", check=positive)
    attention_at: list[int] = option(factory=lambda: [32], help="Resolutions with linear attention "
                                     "before the down-block (the authors' main.py: [32]).",
                                     check=memcore.each(positive))
    last_side: int = option(4, help="Side of the last down-block's output; the decoders read it "
                            "and (a quadrant of) the map before it. lightweight-gan stops at 8 "
                            "and has a stride-2 conv in its logits head; 4 makes that step a "
                            "fourth down-block.", check=positive)
    decoder_upsamples: int = option(3, help="Upsampling steps of each reconstruction decoder.",
                                    check=positive)


class LightGAN(memcore.Discriminator):
    ddp_find_unused = True     # a decoder's quadrant branch may be idle on a rank (HF #11/#21)

    def __init__(self, options: LightGANOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        sides = [ctx.resolution]
        while sides[-1] % 2 == 0 and sides[-1] // 2 >= o.last_side:
            sides.append(sides[-1] // 2)
        if len(sides) < 3:
            raise memcore.MemcoreError(f"discriminator 'lightgan': resolution {ctx.resolution} "
                                       f"must halve at least twice down to >= discriminator."
                                       f"last_side = {o.last_side} px")
        missing = [side for side in o.attention_at if side not in sides[:-1]]
        if missing:
            raise memcore.MemcoreError(
                f"discriminator.attention_at = {list(o.attention_at)}: no {missing[0]} px stage at "
                f"this resolution (stages with attention: {', '.join(map(str, sides[:-1]))})")
        widths = [min(o.width * 2 ** i, o.max_width) for i in range(len(sides) - 1)]
        self.attn = nn.ModuleList(LinearAttention(cin) if side in o.attention_at else nn.Identity()
                                  for side, cin in zip(sides, [ctx.channels] + widths[:-1]))
        self.downs = nn.ModuleList(DownBlock(cin, cout)
                                   for cin, cout in zip([ctx.channels] + widths[:-1], widths))
        last = widths[-1]
        self.to_logits = nn.Sequential(nn.Conv2d(last, last, 1), act(), nn.Conv2d(last, 1, sides[-1]))
        self.head_32 = nn.Sequential(
            nn.Conv2d(ctx.channels, 32, 3, padding=1), LinearAttention(32), DownBlock(32, 16),
            LinearAttention(16), nn.AdaptiveAvgPool2d(4), nn.Conv2d(16, 1, 4))
        self.decode_last = Decoder(last, ctx.channels, o.decoder_upsamples)
        self.decode_quadrant = Decoder(widths[-2], ctx.channels, o.decoder_upsamples)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")

    def forward(self, x, c=None):
        image, features = x, []
        for attn, down in zip(self.attn, self.downs):
            x = down(attn(x))
            features.append(x)
        logits = -self.to_logits(x).flatten(1)[:, 0]      # minus: high = real (see module doc)
        logits_32 = -self.head_32(F.interpolate(image, size=(32, 32))).flatten(1)[:, 0]
        quadrant = int(torch.randint(4, ()))
        recon_last = self.decode_last(features[-1])
        recon_quadrant = self.decode_quadrant(_quadrant(features[-2], quadrant))
        return {"logits": logits, "logits_32": logits_32,
                "recon": recon_last, "target": F.interpolate(image, size=recon_last.shape[-2:]),
                "recon_quadrant": recon_quadrant,
                "target_quadrant": F.interpolate(_quadrant(image, quadrant),
                                                 size=recon_quadrant.shape[-2:])}


def _quadrant(x, index: int):
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    row, col = divmod(index, 2)
    return x[..., row * h:(row + 1) * h, col * w:(col + 1) * w]


class _NeedsLightGAN:
    """Loss terms that read the LightGAN discriminator's 32x32 head (and decoders)."""

    def __init__(self, options=None, ctx=None):
        super().__init__(options, ctx)
        self.where = getattr(ctx, "role", "") or "losses"

    def on_build(self, models) -> None:
        if not isinstance(models.D, LightGAN):
            raise memcore.MemcoreError(
                f"{self.where}: loss '{self.loss_name}' reads the 32x32 head of discriminator "
                f"kind = \"lightgan\", got a {type(models.D).__name__} from "
                f"{type(models.D).__module__.split('.')[0]}")


class LightGANAux(_NeedsLightGAN, memcore.Loss):
    """The 32x32 head's hinge terms (D and G) and the decoders' reconstruction MSE on reals (D)."""

    loss_name = "lightgan-aux"

    def __call__(self, ctx):
        if ctx.phase == "G":
            return -ctx.d_fake["logits_32"].mean()
        real, fake = ctx.d_real, ctx.d_fake
        hinge = F.relu(1 - real["logits_32"]).mean() + F.relu(1 + fake["logits_32"]).mean()
        recon = F.mse_loss(real["recon"], real["target"]) + \
            F.mse_loss(real["recon_quadrant"], real["target_quadrant"])
        ctx.log("lightgan_recon", recon)
        return hinge + recon


@memcore.config
class LightGANPenaltyOptions(memcore.LossOptions):
    weight: float = option(10.0, help="Weight of the penalty (lightweight-gan's gp_weight).",
                           check=positive)
    every: int = option(4, help="The penalty runs on every N-th step (lightweight-gan: 4).",
                        check=positive)
    lazy: bool = option(False, help="false (the code): on those steps the penalty is added, with "
                        "its weight, to the D loss of that step's single D update; true: memcore's "
                        "lazy regularisation, a separate D pass and optimizer step scaled by "
                        "`every` (so it acts as weight x every).")


class LightGANPenalty(_NeedsLightGAN, memcore.Loss):
    """(|grad_x (logits + logits_32)| - 1)^2 on the un-augmented real batch (the forked code's
    two-sided penalty on reals only; current lightweight-gan uses a zero-centred one).

    By default it follows the code's schedule: ``apply_gradient_penalty = steps % 4 == 0`` adds
    gp_weight x penalty to that step's D loss. The trainer only knows lazy terms as separate
    passes scaled by ``every``, so unless ``lazy`` is set this term reports ``every = 1`` to the
    trainer (it joins every D pass) and skips the steps in between itself."""

    phases = ("D",)
    loss_name = "lightgan-gp"

    @property
    def every(self) -> int:
        return self.options.every if self.options.lazy else 1

    def __call__(self, ctx):
        if not self.options.lazy and ctx.step % self.options.every:
            return None
        images = ctx.real.detach().requires_grad_(True)
        out = ctx.discriminate(images, ctx.labels, augment=False)
        total = logits_of(out) + out["logits_32"]
        (grad,) = torch.autograd.grad(total.sum(), images, create_graph=True)
        # + 0 * D's output: under DDP every D parameter must get a gradient in a lazy pass
        return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean() + total.sum() * 0
