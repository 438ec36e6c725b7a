"""StyleGAN2 loss terms: lazy path length and the ADA feed. The non-saturating logistic loss and
lazy R1 are the base plugin's ``non-saturating`` and ``r1`` (same formulas as stylegan2-ada).

Lazy terms (``every`` > 1) run in the core's separate Dreg/Greg pass every N steps and are
multiplied by N there; the learning-rate/beta correction c = N/(N+1) is the core's
``optim.<G|D>.lazy_correction = true``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import memcore
from memcore import dist, in_range, logits_of, non_negative, option, positive


@memcore.config
class PathLengthOptions(memcore.LossOptions):
    weight: float = option(2.0, help="Path-length weight (stylegan2-ada: 2; 0 in its cifar "
                           "preset).", check=non_negative)
    every: int = option(4, help="Lazy interval (stylegan2: 4).", check=positive)
    decay: float = option(0.01, help="Rate of the running mean of path lengths.",
                          check=in_range(0, 1, lo_open=True))
    batch_shrink: int = option(2, help="Use batch / batch_shrink latents for the term.",
                               check=positive)


class PathLength(nn.Module, memcore.Loss):
    """(|J_w^T y| - a)^2 with y ~ N(0, I)/sqrt(H W) and a the running mean of |J_w^T y|.

    ``pl_mean`` is a buffer (saved in checkpoints); its update uses the mean length over every
    process, so all ranks keep the same value (stylegan2-ada keeps one per GPU).
    """

    phases = ("G",)

    def __init__(self, options: PathLengthOptions, ctx: memcore.BuildContext | None = None):
        nn.Module.__init__(self)
        memcore.Loss.__init__(self, options, ctx)
        self.register_buffer("pl_mean", torch.zeros(()))
        self.where = getattr(ctx, "role", "") or "losses"

    def on_build(self, models) -> None:
        import inspect
        if "return_ws" not in inspect.signature(models.G.forward).parameters:
            raise memcore.MemcoreError(
                f"{self.where}: loss 'path-length' differentiates the images by G's styles and "
                f"needs generator kind = \"stylegan2\" (got {type(models.G).__name__} from "
                f"{type(models.G).__module__.split('.')[0]})")

    def __call__(self, ctx):
        o = self.options
        n = max(1, ctx.batch_size // o.batch_shrink)
        latents = {k: v[:n] for k, v in ctx.latents.items()}
        with torch.autocast(device_type=torch.device(ctx.device).type, enabled=False):
            images, ws = ctx.G(**latents, return_ws=True)            # (n, C, H, W), (n, L, w)
            h, w = images.shape[2], images.shape[3]
            noise = torch.randn_like(images) / math.sqrt(h * w)
            (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()                  # (n,)
        with torch.no_grad():
            mean_length = dist.all_reduce_mean(lengths.detach().mean().float())
            self.pl_mean.copy_(self.pl_mean.lerp(mean_length, o.decay))
        ctx.log("pl_mean", self.pl_mean)
        # the images enter with weight 0 so every synthesis parameter is in the graph (DDP)
        return (lengths - self.pl_mean).square().mean() + images[:, 0, 0, 0].mean() * 0


class AdaStats(memcore.Loss):
    """Hands sign(D(real)) of every D pass to the 'ada' augmentation; adds nothing to the loss.

    It reads ``ctx.d_real``, which the adversarial term computes anyway (cached per pass), so it
    costs no extra forward of D.
    """

    phases = ("D",)
    feeds_ada = True

    def on_build(self, models) -> None:
        if models.augment is None or not callable(getattr(models.augment, "accumulate", None)):
            raise memcore.MemcoreError("loss 'ada-stats' feeds the adaptive augmentation: add "
                                       "[augment] kind = \"ada\" to the recipe (or drop the loss)")
        self.augment = models.augment

    def __call__(self, ctx):
        if ctx.pass_name != "D":
            return None
        self.augment.accumulate(logits_of(ctx.d_real))
        ctx.log("ada/p", self.augment.p.float())
        ctx.log("ada/rt", self.augment.rt.float())
        return None
