"""The classic GAN losses as memcore loss terms. D's output is a logit (higher = more real)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import memcore
from memcore import logits_of, non_negative, option, positive


def _real_fake(ctx):
    return logits_of(ctx.d_real), logits_of(ctx.d_fake)


class _Adversarial(memcore.Loss):
    def __call__(self, ctx):
        if ctx.phase == "D":
            real, fake = _real_fake(ctx)
            return self.d_loss(real, fake)
        return self.g_loss(logits_of(ctx.d_fake))


class Hinge(_Adversarial):
    def d_loss(self, real, fake):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


class NonSaturating(_Adversarial):
    def d_loss(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake):
        return F.softplus(-fake).mean()


class Saturating(NonSaturating):
    def g_loss(self, fake):
        return -F.softplus(fake).mean()  # = mean log(1 - sigmoid(fake)), minimised


class LeastSquares(_Adversarial):
    def d_loss(self, real, fake):
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake ** 2).mean()

    def g_loss(self, fake):
        return 0.5 * ((fake - 1) ** 2).mean()


class Wasserstein(_Adversarial):
    def d_loss(self, real, fake):
        return fake.mean() - real.mean()

    def g_loss(self, fake):
        return -fake.mean()


def _input_gradients(ctx, images, labels):
    """(d(sum of D logits)/d(images), a zero that depends on every D parameter).

    Computed in fp32 (autograd.grad and fp16 scaling don't mix). The zero joins the penalty so that
    a lazy pass made of penalties alone still gives every D parameter a gradient: otherwise DDP
    waits for parameters the input gradient does not depend on (D's last bias) and fails with
    "Expected to have finished reduction" (stylegan2-ada adds the same term).
    """
    images = images.detach().float().requires_grad_(True)
    with torch.autocast(device_type=torch.device(ctx.device).type, enabled=False):
        out = logits_of(ctx.discriminate(images, labels))
        (grad,) = torch.autograd.grad(out.sum(), images, create_graph=True)
    return grad, out.sum() * 0


@memcore.config
class GradientPenaltyOptions(memcore.LossOptions):
    weight: float = option(10.0, help="lambda of WGAN-GP.", check=positive)
    target: float = option(1.0, help="Target gradient norm.", check=non_negative)


class GradientPenalty(memcore.Loss):
    phases = ("D",)

    def __call__(self, ctx):
        fake = ctx.fake.detach()
        alpha = torch.rand(ctx.real.shape[0], 1, 1, 1, device=ctx.real.device)
        mixed = alpha * ctx.real + (1 - alpha) * fake
        grad, zero = _input_gradients(ctx, mixed, ctx.labels)
        norm = grad.flatten(1).norm(dim=1)
        return ((norm - self.options.target) ** 2).mean() + zero


@memcore.config
class R1Options(memcore.LossOptions):
    gamma: float = option(10.0, help="R1 weight gamma; the term is gamma/2 * E|grad D(x)|^2.",
                          check=positive)
    every: int = option(16, help="Lazy regularisation interval (stylegan2: 16).", check=positive)


class R1(memcore.Loss):
    phases = ("D",)

    def __call__(self, ctx):
        grad, zero = _input_gradients(ctx, ctx.real, ctx.labels)
        penalty = grad.pow(2).flatten(1).sum(1).mean()
        ctx.log("r1_penalty", penalty)
        return 0.5 * self.options.gamma * penalty + zero
