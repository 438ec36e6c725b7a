"""FastGAN's loss: hinge with random margins, plus D's self-supervised reconstruction of reals.

LPIPS-VGG (FastGAN's reconstruction distance) needs weights that cannot be downloaded here, so the
reconstruction distance is L1 (default) or L2 between D's decoders and the downsampled (augmented)
real image, whole and one random quadrant.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

import memcore
from memcore import in_range, logits_of, non_negative, option


@memcore.config
class FastganLossOptions(memcore.LossOptions):
    reconstruction: Literal["l1", "l2", "none"] = option(
        "l1", help="Distance of D's reconstructions of reals (FastGAN: LPIPS-VGG, not available "
        "offline).")
    reconstruction_weight: float = option(1.0, help="Multiplier of the reconstruction terms.",
                                          check=non_negative)
    margin_low: float = option(0.8, help="Random hinge margin u ~ U(margin_low, 1): at most the "
                               "high margin 1.", check=in_range(0.0, 1.0))


class FastganLoss(memcore.Loss):
    def __call__(self, ctx):
        o = self.options
        if ctx.phase == "G":
            return -logits_of(ctx.d_fake).mean()
        real, fake = logits_of(ctx.d_real), logits_of(ctx.d_fake)
        margin = lambda t: torch.rand_like(t) * (1 - o.margin_low) + o.margin_low
        loss = F.relu(margin(real) - real).mean() + F.relu(margin(fake) + fake).mean()
        if o.reconstruction != "none" and isinstance(ctx.d_real, dict) and "rec_big" in ctx.d_real:
            distance = F.l1_loss if o.reconstruction == "l1" else F.mse_loss
            rec = sum(distance(ctx.d_real[f"rec_{n}"], ctx.d_real[f"target_{n}"])
                      for n in ("big", "small", "part"))
            ctx.log("reconstruction", rec)
            loss = loss + o.reconstruction_weight * rec
        return loss
