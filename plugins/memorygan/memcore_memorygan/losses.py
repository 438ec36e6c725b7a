"""memoryGAN's objective (eq. 7-8) and the memory writes of the step.

L_D = -E log D(x) - E log(1 - D(G(z, K_c))) + lambda I_hat
L_G =  E log(1 - D(G(z, K_c))) + lambda I_hat             (saturating: eq. 8, the code's default)
    or -E log D(G(z, K_c)) + lambda I_hat                  (non-saturating)
I_hat = -E[kappa K_c . mu(G(z, K_c))] with mu the normalised query ("cosine", the paper), or
lambda * mean((raw key - K_c)^2) over all elements ("mse", the code). D(x) is the memory's clipped
p(y=1|x). I_hat is skipped when G is not memory-conditional (the -MCGN ablation).

Writes: the term stages D's real queries with label 1 and fake queries with label 0 in the phases
the discriminator's ``schedule`` names; the memory commits them at its write point.
"""
from __future__ import annotations

from typing import Literal

import torch

import memcore
from memcore import MemcoreError, option

from .networks import DMN


@memcore.config
class MemoryGANLossOptions(memcore.LossOptions):
    generator_loss: Literal["saturating", "non-saturating"] = option(
        "saturating", help="G's adversarial term: log(1 - D(G)) minimised (paper eq. 8, the "
        "code's default) or -log D(G).")
    mi_weight: float = option(1e-2, help="lambda of the mutual-information term (paper: 0.01 "
                              "Fashion-MNIST / affine-MNIST in 4.1 and B.2, 2e-6 in 3.2, used "
                              "for CIFAR-10; code: 1e-2 and 1e-6).", check=memcore.non_negative)
    mi_form: Literal["cosine", "mse"] = option(
        "cosine", help="I_hat as -kappa K_c.q on the normalised query (paper) or the MSE between "
        "the un-normalised key and K_c (code).")


class MemoryGANLoss(memcore.Loss):
    phases = ("D", "G")

    def __init__(self, options: MemoryGANLossOptions, ctx: memcore.BuildContext):
        super().__init__(options, ctx)
        self._dmn: tuple = ()

    def on_build(self, models: memcore.Models) -> None:
        dmn = [m for m in models.D.modules() if isinstance(m, DMN)]
        if not dmn:
            raise MemcoreError("loss 'memorygan' needs discriminator kind = \"memorygan\" (it reads "
                               "D's memory probabilities and writes its queries)")
        if not dmn[0].has_memory:
            raise MemcoreError("loss 'memorygan' reads and writes D's memory, but "
                               "discriminator.memory = false (the -Memory ablation) has none: use "
                               "a memory-free loss such as [[losses]] kind = \"saturating\", or "
                               "set discriminator.memory = true")
        self._dmn = (dmn[0],)

    def __call__(self, ctx) -> torch.Tensor:
        dmn = self._dmn[0]
        fake = ctx.d_fake
        if ctx.phase == "D":
            real = ctx.d_real
            loss = -real["prob"].log().mean() - (-fake["prob"]).log1p().mean()
            ctx.log("p_real", real["prob"].mean())
            ctx.log("clipped_real/D", self._clipped(real["prob"]))
            if "D" in dmn.write_phases:
                dmn.memory.stage(query=torch.cat([real["query"], fake["query"]]),
                                 label=torch.cat([real["prob"].new_ones(len(real["query"])),
                                                  fake["prob"].new_zeros(len(fake["query"]))]))
        else:
            if self.options.generator_loss == "saturating":
                loss = (-fake["prob"]).log1p().mean()
            else:
                loss = -fake["prob"].log().mean()
            if "G" in dmn.write_phases:
                dmn.memory.stage(query=fake["query"], label=fake["prob"].new_zeros(len(fake["query"])))
        ctx.log("p_fake", fake["prob"].mean())
        # Rows at the clip get no gradient (their top-k posterior holds one label): the share
        # says how much of the batch trains the networks at all.
        ctx.log(f"clipped_fake/{ctx.phase}", self._clipped(fake["prob"]))
        key = ctx.latents.get("key")
        if key is not None and self.options.mi_weight > 0:
            mi = self.mutual_information(fake, key, dmn.memory.kappa)
            ctx.log("mi", mi)
            loss = loss + self.options.mi_weight * mi
        return loss

    def _clipped(self, prob: torch.Tensor) -> torch.Tensor:
        eps = self._dmn[0].memory.eps
        low, high = prob.new_tensor(eps), prob.new_tensor(1 - eps)  # the clamp's float32 bounds
        return ((prob <= low) | (prob >= high)).float().mean()

    def mutual_information(self, fake: dict, key: torch.Tensor, kappa: float) -> torch.Tensor:
        """I_hat for the fake batch (B rows); lower is more informative."""
        if self.options.mi_form == "mse":
            return (fake["raw_query"] - key).pow(2).mean()
        return -(kappa * (key * fake["query"]).sum(1)).mean()
