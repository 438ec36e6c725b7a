"""MFH networks: the L2M encoders and memory plus the AdaIN generator (all inside G), and the
projection discriminator with spectral norm and a classifier head.

G holds E_cr, E_ci, the memory M with its addresser R, and the synthesis network, so one
optimiser (Adam on G) trains L2M and FeaHa end to end, and the historical average (the EMA G)
covers all of them. G's ``forward`` has three modes, all reached through the (possibly
DDP-wrapped) network so DDP sees every forward:

* ``mode="sample"`` (default): images from CR features ``cr`` (or ``exemplar`` images, K-shot
  mean) and CI features ``ci`` (or memory ``slot`` indices) — what ``sample_latent`` feeds;
* ``mode="hallucinate"``: the D phase's fakes, G(f_cr of each image (or its class mean), random
  slot);
* ``mode="train"``: the G phase: reconstruction and two hallucinations per real image.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import memcore
from memcore import option, positive

from .memory import CIMemory, ExemplarBank


def stage_sizes(resolution: int) -> list[int]:
    """Feature-map sides, smallest first: halve while even and >= 4 (28: 7,14,28; 32: 4..32)."""
    sizes = [resolution]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= 4:
        sizes.append(sizes[-1] // 2)
    return sizes[::-1]


def default_switch(sizes: list[int], resolution: int) -> int:
    """The paper switches at 32 px of 128 (a quarter of the side); keep at least one CI stage."""
    return max(resolution // 4, sizes[1] if len(sizes) > 1 else sizes[0])


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Eq. 1: each row replaced by the mean feature of its class within the batch (B, d)."""
    onehot = F.one_hot(labels, num_classes).to(features.dtype)              # (B, K)
    sums = onehot.T @ features                                               # (K, d)
    counts = onehot.sum(0).clamp(min=1)[:, None]                             # (K, 1)
    return (sums / counts)[labels]


def check_switch(options):
    return None if options is None or options >= 0 else "a stage size, or 0 for automatic"


@memcore.config
class GeneratorOptions:
    memory_slots: int = option(50, help="n, CI features in the memory M (paper: 50).",
                               check=memcore.at_least(
                                   2, "slots: Algorithm 1 draws two different ones per image"))
    ci_dim: int = option(64, help="w, width of a CI feature (not in the paper).", check=positive)
    cr_dim: int = option(64, help="Width of a CR feature (not in the paper).", check=positive)
    width: int = option(32, help="Synthesis channels at the last stage, doubled per stage towards "
                        "the input (not in the paper).", check=positive)
    max_width: int = option(256, help="Cap on synthesis channels.", check=positive)
    encoder_width: int = option(32, help="E_cr / E_ci channels at the first stage, doubled per "
                                "stage (not in the paper).", check=positive)
    addresser_hidden: int = option(128, help="Hidden units of the addresser MLP R (not in the "
                                   "paper).", check=positive)
    addressing: Literal["gumbel", "nearest", "random"] = option(
        "gumbel", help="'gumbel': R + Gumbel-softmax (paper); 'nearest': VQ-style nearest slot "
        "with stop-gradient updates (the Table 4 ablation); 'random': a uniformly random slot "
        "per image, R unused (an ablation, not in the paper).")
    tau: float = option(1.0, help="Gumbel-softmax temperature τ (not in the paper).", check=positive)
    tau_min: float = option(0.5, help="Lowest τ when annealing.", check=positive)
    tau_anneal: float = option(0.0, help="τ = max(tau_min, tau * exp(-tau_anneal * step)); 0: "
                               "constant τ.", check=memcore.non_negative)
    switch_at: int = option(0, help="Stage size from which AdaIN takes f_cr instead of f_ci "
                            "(paper: 32 of 128 px); 0: a quarter of the side, at least the "
                            "second stage.", check=check_switch)
    convs_per_stage: int = option(2, help="Convolutions (each followed by AdaIN) per stage.",
                                  check=positive)
    train_cr: Literal["image", "class-mean"] = option(
        "image", help="f_cr during training (reconstruction, eq. 8, and the hallucinations): "
        "'image' = E_cr(x_i) of each image, as Algorithm 1 line 2 (paper); 'class-mean' = the "
        "mean E_cr over the batch's images of its class (eq. 1 applied to the batch).")
    cr_head: bool = option(False, help="A linear classifier on E_cr's output over the base "
                           "classes, trained by the mfh-cr-category loss: E_cr supervised by the "
                           "category label (the paper, sec. 3.1); false: E_cr is trained only "
                           "through G's losses.")
    bank_size: int = option(64, help="Real training images kept for exemplar-free sampling "
                            "(grids, metrics during training).", check=positive)


class Encoder(nn.Module):
    """Image -> feature vector: strided convolutions down to the smallest stage, mean pooling."""

    def __init__(self, channels: int, sizes: list[int], width: int, max_width: int, out_dim: int):
        super().__init__()
        widths = [min(width * 2 ** i, max_width) for i in range(len(sizes))]
        layers = [nn.Conv2d(channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).mean((2, 3)))                         # (B, out_dim)


class AdaIN(nn.Module):
    """Instance norm, then a per-channel scale and shift predicted from a condition vector."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.style = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(cond)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class ConvAdaIN(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.adain = AdaIN(cout, cond_dim)

    def forward(self, x, cond):
        return F.leaky_relu(self.adain(self.conv(x), cond), 0.2)


class Synthesis(nn.Module):
    """concat(f_cr, f_ci) -> image; AdaIN after every convolution, conditioned on f_ci on stages
    smaller than ``switch_at`` and on f_cr from ``switch_at`` up (§3.2)."""

    def __init__(self, o: GeneratorOptions, channels: int, sizes: list[int], switch_at: int):
        super().__init__()
        widths = [min(o.width * 2 ** (len(sizes) - 1 - i), o.max_width) for i in range(len(sizes))]
        self.sizes, self.switch_at, self.c0 = sizes, switch_at, widths[0]
        self.stem = nn.Linear(o.cr_dim + o.ci_dim, widths[0] * sizes[0] ** 2)
        self.stages = nn.ModuleList()
        for i, (size, cout) in enumerate(zip(sizes, widths)):
            cin = widths[max(i - 1, 0)]
            cond_dim = o.ci_dim if size < switch_at else o.cr_dim
            self.stages.append(nn.ModuleList(
                ConvAdaIN(cin if j == 0 else cout, cout, cond_dim) for j in range(o.convs_per_stage)))
        self.to_image = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def condition_at(self, size: int) -> str:
        return "ci" if size < self.switch_at else "cr"

    def forward(self, f_cr: torch.Tensor, f_ci: torch.Tensor) -> torch.Tensor:
        x = self.stem(torch.cat([f_cr, f_ci], 1)).view(-1, self.c0, self.sizes[0], self.sizes[0])
        for i, (size, convs) in enumerate(zip(self.sizes, self.stages)):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            cond = f_ci if self.condition_at(size) == "ci" else f_cr
            for conv in convs:
                x = conv(x, cond)
        return torch.tanh(self.to_image(x))


class Generator(memcore.Generator):
    def __init__(self, options: GeneratorOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = self.options = options
        if ctx.num_classes < 2:
            raise memcore.MemcoreError(
                "generator 'mfh' needs a labelled dataset with at least 2 classes (data.classes, "
                "or data.labels = true for image-folder): E_cr averages features per class")
        if o.tau_min > o.tau:
            raise memcore.MemcoreError(
                f"generator.tau_min = {o.tau_min}: above generator.tau = {o.tau} (τ starts at tau "
                "and anneals down to tau_min, so tau would never be used)")
        sizes = stage_sizes(ctx.resolution)
        switch_at = o.switch_at or default_switch(sizes, ctx.resolution)
        if switch_at not in sizes:
            raise memcore.MemcoreError(f"generator.switch_at = {o.switch_at}: not a stage size of "
                                       f"this {ctx.resolution} px generator (stages {sizes})")
        self.z_dim, self.num_classes = o.ci_dim, ctx.num_classes
        self.resolution, self.channels = ctx.resolution, ctx.channels
        self.E_cr = Encoder(ctx.channels, sizes, o.encoder_width, o.max_width, o.cr_dim)
        self.E_ci = Encoder(ctx.channels, sizes, o.encoder_width, o.max_width, o.ci_dim)
        self.memory = CIMemory(o.memory_slots, o.ci_dim, o.ci_dim, o.addresser_hidden,
                               o.addressing, seed=ctx.seed)
        self.synthesis = Synthesis(o, ctx.channels, sizes, switch_at)
        self.bank = ExemplarBank(o.bank_size, ctx.channels, ctx.resolution)
        if o.cr_head:
            self.cr_classifier = nn.Linear(o.cr_dim, ctx.num_classes)

    # -- temperature schedule ------------------------------------------------------------------
    def temperature(self, step: int) -> float:
        o = self.options
        return max(o.tau_min, o.tau * float(torch.exp(torch.tensor(-o.tau_anneal * step))))

    def before_phase(self, ctx) -> None:
        self.memory.tau = self.temperature(ctx.step)

    # -- the three modes -----------------------------------------------------------------------
    def forward(self, mode: str = "sample", **inputs):
        if mode == "sample":
            return self.sample(**inputs)
        if mode == "hallucinate":
            return self.hallucinate(**inputs)
        if mode == "train":
            return self.train_pass(**inputs)
        raise memcore.MemcoreError(f"MFH generator: unknown mode {mode!r}")

    def encode_cr(self, exemplar: torch.Tensor) -> torch.Tensor:
        """Eq. 1 for one class: the mean CR feature of K exemplars (K = 1: one-shot) -> (1, d)."""
        return self.E_cr(exemplar).mean(0, keepdim=True)

    def sample(self, cr=None, slot=None, ci=None, exemplar=None, c=None) -> torch.Tensor:
        """Images from CR features (or exemplars, one class) and CI features (or slot indices)."""
        f_cr = cr if cr is not None else self.encode_cr(exemplar)
        f_ci = ci if ci is not None else self.memory.read_slots(slot)
        return self.synthesis(f_cr.expand(len(f_ci), -1), f_ci)

    def random_slots(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two different random slots per row (Algorithm 1, line 1)."""
        k = self.memory.num_slots
        a = torch.randint(k, (n,), device=device)
        b = (a + torch.randint(1, k, (n,), device=device)) % k
        return a, b

    def training_cr(self, x: torch.Tensor, labels: torch.Tensor):
        """(f_cr of each training image: its own E_cr(x_i), or its class's batch mean
        (train_cr); E_cr(x_i) itself)."""
        features = self.E_cr(x)
        if self.options.train_cr == "class-mean":
            return class_means(features, labels, self.num_classes), features
        return features, features

    def hallucinate(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        f_cr, _ = self.training_cr(x, labels)
        a, _ = self.random_slots(len(x), x.device)
        return self.synthesis(f_cr, self.memory.read_slots(a))

    def train_pass(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction G(f_cr(x), f_ci(x)) (eq. 8) and G(f_cr, m_a), G(f_cr, m_b) (Alg. 1)."""
        f_cr, own = self.training_cr(x, labels)                              # (B, cr_dim)
        read = self.memory(self.E_ci(x))                                     # f_ci (B, w), π
        a, b = self.random_slots(len(x), x.device)
        f_ci = torch.cat([read["f_ci"], self.memory.read_slots(a), self.memory.read_slots(b)])
        recon, fake_a, fake_b = self.synthesis(f_cr.repeat(3, 1), f_ci).chunk(3)
        self.bank.stage(image=x, label=labels)
        out = {"recon": recon, "fake_a": fake_a, "fake_b": fake_b, "probs": read["probs"],
               "pi": read["pi"], "vq_loss": read["vq_loss"]}
        if self.options.cr_head:
            out["cr_logits"] = self.cr_classifier(own)
        return out

    # -- latents -------------------------------------------------------------------------------
    def sample_latent(self, n, generator, device, exemplar=None, **condition):
        """One-shot inference: f_cr from the exemplar(s) (K shots of one class, eq. 1), random
        memory slots for f_ci (distinct while n <= memory size). Without an exemplar (sample grids
        and metrics during training) each row takes one image of the exemplar bank (K = 1)."""
        if condition:
            raise memcore.MemcoreError(f"the MFH generator takes only an exemplar, not "
                                       f"{', '.join(condition)}")
        k = self.memory.num_slots
        slots = torch.randperm(k, generator=generator)[:n] if n <= k \
            else torch.randint(k, (n,), generator=generator)
        with torch.no_grad():
            if exemplar is not None:
                self._check_exemplar(exemplar)
                cr = self.encode_cr(exemplar.to(device)).expand(n, -1).clone()
                return {"cr": cr, "slot": slots.to(device)}
            filled = self.bank.filled()
            if filled == 0:
                raise memcore.MemcoreError("the MFH generator has no exemplar: pass one (memcore "
                                           "sample --exemplar IMAGE) or train at least one step")
            pick = torch.randint(filled, (n,), generator=generator).to(self.bank.labels.device)
            cr = self.E_cr(self.bank.images[pick].to(device))
        return {"cr": cr, "slot": slots.to(device), "c": self.bank.labels[pick].to(device)}

    def _check_exemplar(self, exemplar: torch.Tensor) -> None:
        want = (self.channels, self.resolution, self.resolution)
        if exemplar.dim() != 4 or tuple(exemplar.shape[1:]) != want:
            raise memcore.MemcoreError(f"exemplar: expected images of shape (k, {want[0]}, "
                                       f"{want[1]}, {want[2]}), got {tuple(exemplar.shape)}")


# -- discriminator ----------------------------------------------------------------------------
@memcore.config
class DiscriminatorOptions:
    width: int = option(32, help="Channels at the first stage, doubled per stage (not in the "
                        "paper).", check=positive)
    max_width: int = option(256, help="Cap on channels per stage.", check=positive)


class Discriminator(memcore.Discriminator):
    """Projection cGAN discriminator (SN everywhere) with a classifier head on the same features.

    Returns ``{"logits": (B,), "class_logits": (B, K)}``; the projection term needs labels ``c``.
    """

    def __init__(self, options: DiscriminatorOptions, ctx: memcore.BuildContext):
        super().__init__()
        if ctx.num_classes < 2:
            raise memcore.MemcoreError("discriminator 'mfh' needs a labelled dataset (projection "
                                       "head and classifier over the base classes)")
        o = options
        sizes = stage_sizes(ctx.resolution)[::-1]
        widths = [min(o.width * 2 ** i, o.max_width) for i in range(len(sizes))]
        layers = [spectral_norm(nn.Conv2d(ctx.channels, widths[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers += [spectral_norm(nn.Conv2d(widths[-1], widths[-1], 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.num_classes = ctx.num_classes
        self.head = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(ctx.num_classes, widths[-1]))
        self.classifier = spectral_norm(nn.Linear(widths[-1], ctx.num_classes))

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None):
        h = self.features(x).sum((2, 3))                                     # (B, F), SNGAN pooling
        logits = self.head(h).squeeze(1)
        if c is not None:
            logits = logits + (self.embed(c) * h).sum(1)                     # projection
        return {"logits": logits, "class_logits": self.classifier(h)}
