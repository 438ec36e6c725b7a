"""What a loss term sees during a phase: the batch, the networks, and lazily computed outputs.

Outputs are computed on first use and shared by every term of the pass, so the adversarial loss
and an auxiliary loss that both need ``d_fake`` cause one forward of D. In the D phase, ``d_real``
and ``d_fake`` come from one call of D on ``cat([real, fake])`` (batch statistics see both, as in
stylegan2-ada, and DDP sees one forward); G runs under ``no_grad`` there.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Mapping

import torch
from torch import nn


AUGMENT_TARGETS = ("all", "real")


def applies_to(augment) -> str:
    """What an augmentation module applies to: ``"all"`` (default: every image D sees, real and
    fake, in both phases) or ``"real"`` (class attribute ``applies_to = "real"``: applied once to
    each real batch when it is drawn, never to fakes)."""
    return getattr(augment, "applies_to", "all")


def split_output(out, n: int):
    """Split a D output (tensor or dict of batch-first tensors) at row ``n``."""
    if isinstance(out, Mapping):
        parts = {k: split_output(v, n) if isinstance(v, (torch.Tensor, Mapping)) else (v, v)
                 for k, v in out.items()}
        return {k: p[0] for k, p in parts.items()}, {k: p[1] for k, p in parts.items()}
    return out[:n], out[n:]


class StepContext:
    def __init__(self, *, phase: str, pass_name: str, step: int, nets, models, real: torch.Tensor,
                 labels: torch.Tensor | None, latent_generator: torch.Generator, device,
                 memories: dict, recipe):
        self.phase = phase              # "D" or "G": which network is being trained
        self.pass_name = pass_name      # "D", "G", or "Dreg"/"Greg" for lazy terms
        self.step = step                # 0-based: the first iteration is step 0
        self.G, self.D = nets["G"], nets["D"]   # callables (DDP-wrapped when distributed)
        self.models = models                     # unwrapped: memcore.Models
        self.real = real
        self.labels = labels                     # None when the data is unlabelled
        self.batch_size = real.shape[0]
        self.device = device
        self.memories = memories
        self.recipe = recipe
        self.latent_generator = latent_generator
        self.logs: dict[str, torch.Tensor] = {}
        self._cache: dict[str, Any] = {}

    # -- cached outputs -----------------------------------------------------------------------
    def cached(self, key: str, make):
        """``make()`` once per pass; every later call with ``key`` returns the same value (for
        plugin losses that share an expensive computation, e.g. one forward of their networks)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def latents(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of G for this pass (``z``, and ``c`` when conditional)."""
        return self.cached("latents", lambda: self.models.G.sample_latent(
            self.batch_size, self.latent_generator, self.device))

    @property
    def fake_labels(self) -> torch.Tensor | None:
        return self.latents.get("c")

    @property
    def fake(self) -> torch.Tensor:
        """G's images for this pass; detached (made under no_grad) in the D phase."""
        def make():
            if self.phase == "D":
                with torch.no_grad():
                    return self.G(**self.latents).detach()
            return self.G(**self.latents)
        return self.cached("fake", make)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """The recipe's augmentation, for augmentations that apply to every image D sees; one
        with ``applies_to = "real"`` was applied when the real batch was drawn, so not here."""
        aug = self.models.augment
        if aug is None or applies_to(aug) == "real":
            return images
        return aug(images)

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                     augment: bool = True):
        """D on ``images`` (augmented unless told otherwise); labels only when conditional."""
        x = self.augment(images) if augment else images
        if self.models.D.num_classes and labels is not None:
            return self.D(x, labels)
        return self.D(x)

    def _joint(self):
        """D's outputs on the real and the fake batch of the D phase: one call on both, or two
        (``train.d_batches = "separate"``: BatchNorm statistics per batch)."""
        def make():
            if self.recipe is not None and self.recipe.train.d_batches == "separate":
                return (self.discriminate(self.real, self.labels),
                        self.discriminate(self.fake, self.fake_labels))
            labels = None
            if self.labels is not None and self.fake_labels is not None:
                labels = torch.cat([self.labels, self.fake_labels])
            out = self.discriminate(torch.cat([self.real, self.fake]), labels)
            return split_output(out, self.batch_size)
        return self.cached("joint", make)

    @property
    def d_real(self):
        """D's output on the (augmented) real batch."""
        if self.phase == "D":
            return self._joint()[0]
        return self.cached("d_real", lambda: self.discriminate(self.real, self.labels))

    @property
    def d_fake(self):
        """D's output on the (augmented) fake batch."""
        if self.phase == "D":
            return self._joint()[1]
        return self.cached("d_fake", lambda: self.discriminate(self.fake, self.fake_labels))

    # -- logging ------------------------------------------------------------------------------
    def log(self, name: str, value) -> None:
        """Record a value for the log line (averaged over the logging interval)."""
        self.logs[name] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)


# -- loss terms from blocks ---------------------------------------------------------------------
_recorder: contextvars.ContextVar["BlockLosses | None"] = contextvars.ContextVar(
    "memcore_block_losses", default=None)


def add_loss(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Record a loss term computed inside ``module``'s forward (a VQ commitment, a
    load-balancing term, a memory's regulariser) for the step being trained.

    The trainer adds ``value * train.block_loss_weights[name]`` (default weight 1) to the loss of
    the phase that trains the network holding ``module`` — a term of a block in G joins the G
    phase, one in D the D phase; terms recorded while the other network runs, in lazy passes,
    or outside training (sampling, evaluation, contract checks) are dropped. Several forwards of
    one module in a pass (two D calls with ``train.d_batches = "separate"``) give the mean of
    its values; terms of different modules under one name add up. The log has
    ``loss/<pass>/<name>``. Under DDP and micro-batches the term is part of each micro-batch's
    loss, so it is averaged and all-reduced like every other term.
    """
    recorder = _recorder.get()
    if recorder is not None:
        recorder.add(module, name, value)


class BlockLosses:
    """What the modules of one network recorded with :func:`add_loss` during one pass."""

    def __init__(self, owners: Mapping[int, str], trained: str):
        self.owners, self.trained = owners, trained
        self._values: dict[tuple[int, str], list[torch.Tensor]] = {}

    def add(self, module: nn.Module, name: str, value: torch.Tensor) -> None:
        if self.owners.get(id(module)) == self.trained:
            self._values.setdefault((id(module), name), []).append(value)

    def terms(self) -> dict[str, torch.Tensor]:
        """``name -> value``: the mean over one module's calls, summed over modules."""
        out: dict[str, torch.Tensor] = {}
        for (_, name), values in self._values.items():
            mean = torch.stack([v.float().reshape(()) for v in values]).mean()
            out[name] = out[name] + mean if name in out else mean
        return out


def module_owners(G: nn.Module, D: nn.Module) -> dict[int, str]:
    """``id(module) -> "G" | "D"`` for every module of the two networks (unwrapped)."""
    return {id(m): role for role, net in (("G", G), ("D", D)) for m in net.modules()}


@contextlib.contextmanager
def recording_block_losses(owners: Mapping[int, str], trained: str) -> Iterator[BlockLosses]:
    """While active, :func:`add_loss` records the terms of the ``trained`` network's modules."""
    recorder = BlockLosses(owners, trained)
    token = _recorder.set(recorder)
    try:
        yield recorder
    finally:
        _recorder.reset(token)
