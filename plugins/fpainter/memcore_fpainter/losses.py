"""Showing D the FPA canvas before the U-Net as well (the code's --pre_unet_loss, App. C.1).

Hinge with memcore's sign convention (D's logit is high for real): the D phase adds
relu(1 + D(canvas)) for the pre-U-Net canvases (the real term is already in the main ``hinge``),
the G phase adds -D(canvas). The canvas is recomputed from the pass's latents with ``G.painter``,
so no tensor is stashed between G's forward and the loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import memcore
from memcore import logits_of


class PreUNetHinge(memcore.Loss):
    def on_build(self, models):
        if not (hasattr(models.G, "painter") and hasattr(models.G, "unet")):
            raise memcore.MemcoreError("losses: 'fpa-pre-unet' needs generator.kind = \"fpa-unet\" "
                                       f"(got a {type(models.G).__name__})")

    def __call__(self, ctx):
        painter = ctx.models.G.painter
        if ctx.phase == "D":
            with torch.no_grad():
                canvas = painter(**ctx.latents)
            return F.relu(1 + logits_of(ctx.discriminate(canvas))).mean()
        return -logits_of(ctx.discriminate(painter(**ctx.latents))).mean()
