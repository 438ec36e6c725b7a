"""memoryGAN's networks: the DMN discriminator (inference network mu + memory) and the MCGN
generator (c ~ p(c | v = 1) from D's memory, images from [K_c, z]).

The default backbones follow the authors' Fashion-MNIST code, generalised to any side divisible by
4 (28, 32, 64): D is three 4x4 stride-2 convs (no norm, BN, BN; LeakyReLU 0.2) and one valid conv
over the remaining map to the key (with BN, no activation); G is fc 1024 (BN, LeakyReLU) -> fc to
(width, side/4, side/4) (BN, ReLU) -> 4x4 stride-2 deconv (BN, ReLU) -> 4x4 stride-2 deconv to the
image with tanh (memcore images are in [-1, 1]; the code used sigmoid on [0, 1]).
"""
from __future__ import annotations

from typing import Literal, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import nn

import memcore
from memcore import MemcoreError, in_range, option, positive

from .init import init_weights
from .memory import DiscriminativeMemory


# -- discriminator ----------------------------------------------------------------------------
@memcore.config
class DMNOptions:
    key_dim: int = option(256, help="Query/key dimension M (Table 3: 256 Fashion-MNIST, 512 CIFAR-10).",
                          check=positive)
    slots: int = option(4096, help="Memory size N (Table 3: 4096 Fashion-MNIST, 16384 CIFAR-10).",
                        check=memcore.at_least(2, "slots: half start real, half fake"))
    top_k: int = option(128, help="Nearest slots k for read and write (paper: 128 Fashion-MNIST "
                        "and affine-MNIST, '128 ~ 256' in 3.1.1; code: 256 CIFAR-10).",
                        check=positive)
    kappa: float = option(1.0, help="vMF concentration kappa.", check=positive)
    beta: float = option(1e-8, help="Histogram smoothing beta of the prior.", check=positive)
    # 0 lets p(y|x) reach 0 or 1 (an infinite loss); 0.5 makes it constant
    eps: float = option(1e-3, help="p(y|x) is clipped to [eps, 1 - eps].",
                        check=in_range(0, 0.5, lo_open=True, hi_open=True))
    decay: float = option(0.5, help="Histogram decay alpha of the incremental EM.",
                          check=in_range(0.0, 1.0))
    em_iters: int = option(1, help="EM iterations T per write (code: 1; the paper gives none).",
                           check=positive)
    em: Literal["paper", "code"] = option(
        "paper", help="Histogram statistic of the EM step. paper: eq. 5, every slot i of S_y adds "
        "its own posterior gamma_i (h <- alpha h + gamma_i, key step gamma_i / (alpha h + "
        "gamma_i)). code: the authors' code (TF and PyTorch port) sums the posterior over the k "
        "neighbours, so every slot of S_y adds 1 (h <- alpha h + 1, key step gamma_i / (alpha h "
        "+ 1)).")
    update: Literal["em", "kaiser"] = option(
        "em", help="Key update: incremental EM (eq. 5) or the -EM ablation K <- normalise(K + q).")
    reset: Literal["no-label-in-top-k", "top1-wrong"] = option(
        "no-label-in-top-k", help="When a row replaces the oldest slot: no slot of its top-k has "
        "its label (paper) or its top-1 slot has the wrong label (code).")
    combine: Literal["averaged", "summed"] = option(
        "averaged", help="How rows writing one slot in a commit combine: averaged = the expected "
        "result of eq. 5 row by row in random order (decay per row, mean statistic; the "
        "histogram stays bounded as in the code); summed = mini-batch EM (decay once, summed "
        "statistics; slots shared by many rows grow with the batch).")
    schedule: Literal["after-D", "every-evaluation"] = option(
        "after-D", help="after-D: real and fake queries of the D phase are written after D's "
        "optimizer step (Algorithm 1). every-evaluation: every D evaluation in training writes "
        "at once, the G phase's fakes included (the authors' code).")
    width: int = option(64, help="dcgan: channels of the first conv, doubled per conv; resnet: "
                        "channels of every conv (code: 128).", check=positive)
    batch_norm: bool = option(True, help="dcgan: BatchNorm on the second and third conv and the "
                              "key; resnet: on the first conv of every residual block.")
    write_in_eval: bool = option(False, help="Also write when D is in eval mode.")
    backbone: Literal["dcgan", "resnet"] = option(
        "dcgan", help="Inference network: the code's Fashion-MNIST DCGAN-style convs (sides >= 16 "
        "divisible by 4) or its CIFAR-10 ResNet with layer norm and ELU (32 px only).")
    memory: bool = option(True, help="false: the -Memory ablation with the same inference network: "
                          "a linear head from the raw key to one logit replaces the memory (D "
                          "returns logits only; pair it with a memory-free loss, e.g. saturating).")


class DMN(memcore.Discriminator):
    """Discriminative memory network: returns logits of the clipped p(y=1|x) plus the queries."""

    num_classes = 0  # unsupervised: labels are never used

    def __init__(self, options: DMNOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        if o.update == "kaiser" and o.em_iters != 1:
            raise MemcoreError(f"discriminator.em_iters = {o.em_iters}: applies to "
                               "discriminator.update = \"em\" only (the -EM ablation, "
                               "\"kaiser\", makes a single E-step)")
        self.backbone, self.has_memory = o.backbone, o.memory
        if o.backbone == "resnet":
            from .resnet import ResNetEncoder
            self.encoder = ResNetEncoder(o.key_dim, o.width, o.batch_norm, ctx)  # initialised
        else:
            self._build_dcgan(o, ctx)
            init_weights(self.convs)
            init_weights(self.to_key)
        if not o.memory:  # -Memory: same inference network, linear head on the raw key
            self.head = nn.Linear(o.key_dim, 1)
            self.write_phases = ()
            init_weights(self.head)
            return
        self.memory = DiscriminativeMemory(
            o.slots, o.key_dim, top_k=o.top_k, kappa=o.kappa, beta=o.beta, eps=o.eps,
            decay=o.decay, em_iters=o.em_iters, update=o.update, reset=o.reset, combine=o.combine,
            em=o.em,
            write_at="after_D" if o.schedule == "after-D" else "forward",
            write_in_eval=o.write_in_eval, seed=ctx.seed)
        self.write_phases = ("D",) if o.schedule == "after-D" else ("D", "G")

    def _build_dcgan(self, o: DMNOptions, ctx: memcore.BuildContext) -> None:
        if ctx.resolution < 16 or ctx.resolution % 4:
            raise MemcoreError(f"discriminator 'memorygan' needs images of at least 16 px with a "
                               f"side divisible by 4, got {ctx.resolution}")
        norm = (lambda c: nn.BatchNorm2d(c)) if o.batch_norm else (lambda c: nn.Identity())
        widths = [ctx.channels, o.width, o.width * 2, o.width * 4]
        sizes = [ctx.resolution]
        for _ in range(3):
            sizes.append((sizes[-1] + 2 - 4) // 2 + 1)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1),
                          norm(cout) if i else nn.Identity(), nn.LeakyReLU(0.2))
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])))
        self.sizes = sizes[1:]
        self.blocks = ctx.block_slots(dict(zip(self.sizes, widths[1:])))
        self.to_key = nn.Sequential(nn.Conv2d(widths[-1], o.key_dim, self.sizes[-1]),
                                    nn.BatchNorm1d(o.key_dim) if o.batch_norm else nn.Identity())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The inference network's un-normalised key (B, M)."""
        if self.backbone == "resnet":
            return self.encoder(x)
        h = x
        for size, conv in zip(self.sizes, self.convs):
            h = self.blocks(size, conv(h))
        return self.to_key[1](self.to_key[0](h).flatten(1))

    def forward(self, x: torch.Tensor, c=None) -> dict[str, torch.Tensor]:
        raw = self.embed(x)                                              # (B, M)
        if not self.has_memory:
            return {"logits": self.head(raw).squeeze(1)}                 # (B,)
        query = F.normalize(raw, dim=1)                                  # q = mu(x), |q| = 1
        prob = self.memory(query)["prob"]                                # (B,) in [eps, 1-eps]
        return {"logits": prob.log() - (-prob).log1p(), "prob": prob, "query": query,
                "raw_query": raw}


# -- generator --------------------------------------------------------------------------------
@memcore.config
class MCGNOptions:
    z_dim: int = option(2, help="Noise dimension (Table 3: 2 Fashion-MNIST, 16 CIFAR-10).",
                        check=positive)
    key_dim: int = option(256, help="Must equal discriminator.key_dim.", check=positive)
    z_dist: Literal["normal", "uniform"] = option(
        "normal", help="z ~ N(0, I) (memcore's choice: the paper gives no p(z)) or U(-1, 1) (the "
        "code).")
    width: int = option(128, help="Channels of the built-in generator's first deconv.",
                        check=positive)
    fc_width: int = option(1024, help="Width of the built-in generator's first fc layer.",
                           check=positive)
    memory_conditioning: bool = option(
        True, help="Condition on a key sampled from D's memory; false is the -MCGN ablation "
        "(z only, nothing read from D).")
    inner: Optional[memcore.slot("generator", blocks=True)] = option(
        None, help="Any registered generator with a z_dim option, fed [K_c, z] as its z "
        "(z_dim is set to key_dim + z_dim); absent: the built-in Fashion-MNIST generator.")


class MCGN(memcore.Generator):
    """Memory-conditional generator: ``forward(z, key)``, latents sampled from D's memory."""

    num_classes = 0

    def __init__(self, options: MCGNOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        self.z_dim, self.key_dim, self.z_dist = o.z_dim, o.key_dim, o.z_dist
        self.conditioned = o.memory_conditioning
        in_dim = o.z_dim + (o.key_dim if self.conditioned else 0)
        if o.inner is None:
            self.net = _FashionGenerator(in_dim, o.width, o.fc_width, ctx)
        else:
            self.net = _build_inner(o.inner, in_dim, ctx)
        self._memory: tuple = ()  # plain reference to D's memory: not a submodule, not saved

    def on_build(self, models: memcore.Models) -> None:
        if not self.conditioned:
            return
        memories = [m for m in models.D.modules() if isinstance(m, DiscriminativeMemory)]
        if len(memories) != 1:
            raise MemcoreError("generator 'memorygan' samples keys from D's memory and needs "
                               "discriminator kind = \"memorygan\" with memory = true (found "
                               f"{len(memories)} memoryGAN memories in D); the -Memory ablation "
                               "takes a memory-free generator")
        if memories[0].key_dim != self.key_dim:
            raise MemcoreError(f"generator.key_dim = {self.key_dim} must equal "
                               f"discriminator.key_dim = {memories[0].key_dim}")
        self._memory = (memories[0],)

    @property
    def memory(self) -> DiscriminativeMemory:
        if not self._memory:
            raise MemcoreError("this memoryGAN generator is not attached to a discriminator's "
                               "memory: build it inside a run or with memcore.load_run")
        return self._memory[0]

    def sample_latent(self, n, generator, device, **condition):
        if condition:
            raise MemcoreError(f"generator 'memorygan' does not take {', '.join(condition)}")
        if not self.conditioned:
            return {"z": self.sample_z(n, generator).to(device)}
        slots = self.memory.sample_slots(n, generator)                  # (n,) CPU
        return {"z": self.sample_z(n, generator).to(device),
                "key": self.memory.keys[slots.to(self.memory.keys.device)].to(device)}

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.z_dist == "uniform":
            return torch.rand(n, self.z_dim, generator=generator) * 2 - 1
        return torch.randn(n, self.z_dim, generator=generator)

    def forward(self, z: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z=z if key is None else torch.cat([key, z], dim=1))


def _build_inner(spec, in_dim: int, ctx: memcore.BuildContext) -> nn.Module:
    if not any(f.name == "z_dim" for f in attrs.fields(type(spec.options))):
        raise MemcoreError(f"generator.inner: generator '{spec.kind}' has no z_dim option, so it "
                           "cannot take [K_c, z] as its latent")
    entry = memcore.get_registry().get("generator", spec.kind)
    options = attrs.evolve(spec.options, z_dim=in_dim)
    inner_ctx = attrs.evolve(ctx, role="generator.inner", blocks=spec.blocks, num_classes=0)
    return entry.load_factory()(options, inner_ctx)


class _FashionGenerator(nn.Module):
    def __init__(self, in_dim: int, width: int, fc_width: int, ctx: memcore.BuildContext):
        super().__init__()
        if ctx.resolution % 4:
            raise MemcoreError(f"generator 'memorygan' needs a side divisible by 4, got "
                               f"{ctx.resolution}")
        self.start, self.width = ctx.resolution // 4, width
        self.fc = nn.Sequential(
            nn.Linear(in_dim, fc_width), nn.BatchNorm1d(fc_width), nn.LeakyReLU(0.2),
            nn.Linear(fc_width, width * self.start ** 2), nn.BatchNorm1d(width * self.start ** 2),
            nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width),
            nn.ReLU(), nn.ConvTranspose2d(width, ctx.channels, 4, stride=2, padding=1), nn.Tanh())
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, self.width, self.start, self.start))
