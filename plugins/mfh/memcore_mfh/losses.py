"""MFH loss terms (eq. 6): adversarial (eq. 7, with the classifier), reconstruction L_R (eq. 8),
diversity L_ds (eq. 9 / Algorithm 1) and category balance L_cb (eq. 10).

The fakes of MFH are conditioned on the real batch (the class-mean CR features of the batch's
images), which ``ctx.latents``/``ctx.fake`` cannot express, so the terms share one pass of their
own per phase, cached on the step context: in the D phase G hallucinates under ``no_grad`` and D
sees real and fake in one call; in the G phase one G forward gives the reconstruction and the two
hallucinations per image, and one D call scores both hallucinations. Episodes (several images of
one class) come from the batch itself: E_cr averages over the batch's images of each class.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

import memcore
from memcore import option


class MFHLoss(memcore.Loss):
    """An MFH term: it drives generator 'mfh' (hallucination from a real batch) and reads the
    class logits of discriminator 'mfh', so other networks are refused when the run is built."""

    def on_build(self, models) -> None:
        from .networks import Discriminator, Generator
        for role, net, cls in (("generator", models.G, Generator),
                               ("discriminator", models.D, Discriminator)):
            if not isinstance(net, cls):
                raise memcore.MemcoreError(
                    f"the MFH losses need {role}.kind = \"mfh\" (they call the MFH generator's "
                    f"hallucination and read the MFH discriminator's class logits), got a "
                    f"{type(net).__name__} from {type(net).__module__.split('.')[0]}")


def mfh_pass(ctx) -> dict:
    """The phase's G and D outputs, computed once and shared by every MFH term of the pass."""
    return ctx.cached("mfh_pass", lambda: _compute_pass(ctx))


def _compute_pass(ctx) -> dict:
    if ctx.labels is None:
        raise memcore.MemcoreError("the MFH losses need labelled data (data.classes, or "
                                   "data.labels = true for image-folder)")
    cache = {}
    real, labels = ctx.real, ctx.labels
    if ctx.phase == "D":
        with torch.no_grad():
            fake = ctx.G(mode="hallucinate", x=real, labels=labels).detach()
        out = ctx.discriminate(torch.cat([real, fake]), torch.cat([labels, labels]))
        n = len(real)
        cache["d_real"] = {k: v[:n] for k, v in out.items()}
        cache["d_fake"] = {k: v[n:] for k, v in out.items()}
    else:
        g = ctx.G(mode="train", x=real, labels=labels)
        cache.update(g)
        cache["d_fake"] = ctx.discriminate(torch.cat([g["fake_a"], g["fake_b"]]),
                                           torch.cat([labels, labels]))
        # collapse indicator: how different two slots make the images of one exemplar
        ctx.log("mfh/slot_image_l1", (g["fake_a"] - g["fake_b"]).abs().mean())
        probs = g["probs"]
        ctx.log("mfh/address_entropy", -(probs * probs.clamp_min(1e-12).log()).sum(1).mean())
    return cache


# -- eq. 7 -------------------------------------------------------------------------------------
@memcore.config
class AdversarialOptions(memcore.LossOptions):
    cls_weight: float = option(1.0, help="Weight of the classifier terms: cross-entropy of D's "
                               "classifier on reals (D) and on both hallucinations (G, Algorithm 1 "
                               "line 5) (not in the paper).", check=memcore.non_negative)


def adversarial_terms(d_real, d_fake, labels, phase: str, cls_weight: float):
    """Eq. 7 with the logistic loss on the projection logits (non-saturating for G), plus the
    classifier cross-entropy; returns (total, gan part, classifier part)."""
    if phase == "D":
        gan = F.softplus(-d_real["logits"]).mean() + F.softplus(d_fake["logits"]).mean()
        cls = F.cross_entropy(d_real["class_logits"], labels)
    else:
        gan = F.softplus(-d_fake["logits"]).mean()
        cls = F.cross_entropy(d_fake["class_logits"], labels.repeat(2))
    return gan + cls_weight * cls, gan, cls


class Adversarial(MFHLoss):
    phases = ("D", "G")

    def __call__(self, ctx):
        p = mfh_pass(ctx)
        total, gan, cls = adversarial_terms(p.get("d_real"), p["d_fake"], ctx.labels, ctx.phase,
                                            self.options.cls_weight)
        ctx.log(f"mfh/{ctx.phase}_gan", gan)
        ctx.log(f"mfh/{ctx.phase}_cls", cls)
        return total


# -- eq. 8 -------------------------------------------------------------------------------------
class Reconstruction(MFHLoss):
    """L_R = E‖x − G(f_cr, f_ci(x))‖₁ (mean per pixel). With nearest addressing the memory adds
    the VQ codebook and commitment terms to the G phase itself (``memcore.add_loss``, logged as
    ``loss/G/mfh-vq``), whatever this term's weight."""

    phases = ("G",)

    def __call__(self, ctx):
        p = mfh_pass(ctx)
        l1 = (ctx.real - p["recon"]).abs().mean()
        ctx.log("mfh/recon_l1", l1)
        return l1


# -- eq. 9 -------------------------------------------------------------------------------------
@memcore.config
class DiversityOptions(memcore.LossOptions):
    alpha: float = option(0.5, help="α, the diversity target: mean per-pixel L1 between the two "
                          "hallucinations in [-1, 1] units (not in the paper).",
                          check=memcore.non_negative)
    hinge: bool = option(True, help="max(0, α − d) per image, so α is a target; false: α − d as "
                         "written in eq. 9 (α then only shifts the value).")


def diversity_loss(fake_a, fake_b, alpha: float, hinge: bool) -> torch.Tensor:
    distance = (fake_a - fake_b).abs().flatten(1).mean(1)                 # (B,)
    return F.relu(alpha - distance).mean() if hinge else alpha - distance.mean()


class Diversity(MFHLoss):
    phases = ("G",)

    def __call__(self, ctx):
        p = mfh_pass(ctx)
        return diversity_loss(p["fake_a"], p["fake_b"], self.options.alpha, self.options.hinge)


# -- eq. 10 ------------------------------------------------------------------------------------
@memcore.config
class BalanceOptions(memcore.LossOptions):
    over: Literal["batch", "sample"] = option(
        "batch", help="'batch': KL(mean_i π_i ‖ uniform), balanced slot usage over the batch; "
        "'sample': mean_i KL(π_i ‖ uniform) (the literal per-image reading, which flattens every "
        "address).")


def kl_to_uniform(probs: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ uniform) = Σ p log(p n) over the last axis."""
    n = probs.shape[-1]
    return (probs * (probs.clamp_min(1e-12).log() + math.log(n))).sum(-1)


def balance_loss(probs: torch.Tensor, over: str) -> torch.Tensor:
    return kl_to_uniform(probs.mean(0)) if over == "batch" else kl_to_uniform(probs).mean()


class Balance(MFHLoss):
    """L_cb on the addresser's soft probabilities softmax(R(f̃_ci)) (the one-hot π has a constant
    KL of log n and no gradient of its own)."""

    phases = ("G",)

    def __call__(self, ctx):
        return balance_loss(mfh_pass(ctx)["probs"], self.options.over)


# -- sec. 3.1: E_cr supervised by the category label ------------------------------------------
class CRCategory(MFHLoss):
    """Cross-entropy of the linear classifier on E_cr(x) against x's class: the paper trains E_cr
    "with the category label as supervision", making the CR feature a prototype space."""

    phases = ("G",)

    def on_build(self, models) -> None:
        super().on_build(models)
        if not models.G.options.cr_head:
            raise memcore.MemcoreError("loss 'mfh-cr-category' needs generator.cr_head = true "
                                       "(the classifier on E_cr it trains)")

    def __call__(self, ctx):
        p = mfh_pass(ctx)
        loss = F.cross_entropy(p["cr_logits"], ctx.labels)
        ctx.log("mfh/cr_accuracy", (p["cr_logits"].argmax(1) == ctx.labels).float().mean())
        return loss
